"""AWS clients built once per cold start; ``AWS_ENDPOINT_URL`` alone points them at a local endpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
_Client = TypeVar("_Client")
_PARAMS_IN_CONTEXT = "infinitetalk_observed_params"


@dataclass(frozen=True)
class AwsCall:
    """One call a shared client made: what it asked for and how it was answered."""

    service: str
    operation: str
    params: Mapping[str, Any]
    status: int | None  # the HTTP status; None when presigned (signed, not sent) or never answered
    presigned: bool = False


CallObserver = Callable[[AwsCall], None]
# Empty in AWS: the local stack registers one to prove that the template allows every call made.
_call_observers: list[CallObserver] = []


def observe_calls(observer: CallObserver) -> Callable[[], None]:
    """Show ``observer`` every call of the shared clients, in the calling thread; returns the undo."""
    _call_observers.append(observer)
    return lambda: _call_observers.remove(observer)


def _notify(call: AwsCall) -> None:
    for observer in list(_call_observers):
        observer(call)


def _on_params(params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    if not _call_observers:
        return
    if context.get("is_presign_request"):
        _notify(AwsCall(model.service_model.service_name, model.name, params, None, presigned=True))
    else:
        context[_PARAMS_IN_CONTEXT] = params


def _on_answer(model: Any, context: dict[str, Any], http_response: Any = None, **_: Any) -> None:
    params = context.pop(_PARAMS_IN_CONTEXT, None)
    if params is not None and _call_observers:
        status = int(http_response.status_code) if http_response is not None else None
        _notify(AwsCall(model.service_model.service_name, model.name, params, status))


def _on_no_answer(context: dict[str, Any], **kwargs: Any) -> None:
    params = context.pop(_PARAMS_IN_CONTEXT, None)
    model = kwargs.get("model")
    if params is not None and _call_observers and model is not None:
        _notify(AwsCall(model.service_model.service_name, model.name, params, None))


def _observable(client: _Client) -> _Client:
    events = client.meta.events  # type: ignore[attr-defined]
    events.register("provide-client-params", _on_params)
    events.register("after-call", _on_answer)
    events.register("after-call-error", _on_no_answer)
    return client


@cache
def s3_client() -> S3Client:
    return _observable(boto3.client("s3", config=_CONFIG.merge(Config(signature_version="s3v4"))))


@cache
def sqs_client() -> SQSClient:
    return _observable(boto3.client("sqs", config=_CONFIG))


@cache
def dynamodb_client() -> DynamoDBClient:
    return _observable(boto3.client("dynamodb", config=_CONFIG))


@cache
def events_client() -> EventBridgeClient:
    return _observable(boto3.client("events", config=_CONFIG))


@cache
def secrets_client() -> SecretsManagerClient:
    return _observable(boto3.client("secretsmanager", config=_CONFIG))


@cache
def sns_client() -> SNSClient:
    return _observable(boto3.client("sns", config=_CONFIG))


def reset_clients() -> None:
    """Forget cached clients, for tests that change the environment between cases."""
    for factory in (s3_client, sqs_client, dynamodb_client, events_client, secrets_client, sns_client):
        factory.cache_clear()
