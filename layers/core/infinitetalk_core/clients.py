"""AWS clients built once per cold start; ``AWS_ENDPOINT_URL`` alone points them at a local endpoint."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)


@cache
def s3_client() -> S3Client:
    return boto3.client("s3", config=_CONFIG.merge(Config(signature_version="s3v4")))


@cache
def sqs_client() -> SQSClient:
    return boto3.client("sqs", config=_CONFIG)


@cache
def dynamodb_client() -> DynamoDBClient:
    return boto3.client("dynamodb", config=_CONFIG)


@cache
def events_client() -> EventBridgeClient:
    return boto3.client("events", config=_CONFIG)


@cache
def secrets_client() -> SecretsManagerClient:
    return boto3.client("secretsmanager", config=_CONFIG)


def reset_clients() -> None:
    """Forget cached clients, for tests that change the environment between cases."""
    for factory in (s3_client, sqs_client, dynamodb_client, events_client, secrets_client):
        factory.cache_clear()
