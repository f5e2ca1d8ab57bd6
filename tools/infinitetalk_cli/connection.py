"""Which stack the command talks to, and the AWS clients for it.

The same command serves the local stack and a deployed one, so the resources are found in one
fixed order: a deployed stack's outputs, names given directly, then the local stack's connection file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from infinitetalk_core.repository import JobRepository
from infinitetalk_core.storage import MediaBucket

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

DEFAULT_REGION = "us-east-1"
DEFAULT_LOCAL_STACK_FILE = Path(".local-stack/stack.json")
STACK_OUTPUTS = {"bucket": "BucketName", "jobs_table": "JobsTableName", "ledger_table": "LedgerTableName"}
DIRECT_OPTIONS = {"bucket": "--bucket", "jobs_table": "--jobs-table", "ledger_table": "--ledger-table"}
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60)


class NotConfigured(Exception):
    """No usable stack: the message names the option to pass."""


@dataclass(frozen=True)
class ConnectionOptions:
    """What the user said on the command line or in the environment; ``None`` means not said."""

    endpoint_url: str | None = None
    region: str | None = None
    stack: str | None = None
    bucket: str | None = None
    jobs_table: str | None = None
    ledger_table: str | None = None
    local_stack_file: Path | None = None


@dataclass(frozen=True)
class Connection:
    """The resolved resources, and where they were found (shown when something goes wrong)."""

    bucket: str
    jobs_table: str
    ledger_table: str
    region: str
    source: str
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None


StackReader = Callable[[str, str, str | None], dict[str, str]]


@dataclass(frozen=True)
class StackDescription:
    """A deployed stack's outputs and parameter values, by key."""

    outputs: dict[str, str]
    parameters: dict[str, str]


def describe_stack(stack: str, region: str, endpoint_url: str | None) -> StackDescription:
    """Outputs and parameters of a deployed stack, read with one DescribeStacks call."""
    cloudformation: Any = boto3.session.Session(region_name=region).client(
        "cloudformation", endpoint_url=endpoint_url, config=CLIENT_CONFIG
    )
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise NotConfigured(
            f"stack {stack!r} could not be read in {region}: {message}; check --stack and --region"
        ) from exc
    except BotoCoreError as exc:
        raise NotConfigured(f"stack {stack!r} could not be read in {region}: {exc}") from exc
    return StackDescription(
        outputs={str(o["OutputKey"]): str(o["OutputValue"]) for o in stacks[0].get("Outputs", [])},
        parameters={str(p["ParameterKey"]): str(p.get("ParameterValue", "")) for p in stacks[0].get("Parameters", [])},
    )


def stack_outputs(stack: str, region: str, endpoint_url: str | None) -> dict[str, str]:
    """A deployed stack's outputs by key."""
    return describe_stack(stack, region, endpoint_url).outputs


def resolve(options: ConnectionOptions, read_stack: StackReader = stack_outputs) -> Connection:
    """Find the bucket and tables: ``--stack``, else the direct names, else the local stack file."""
    direct = {field: getattr(options, field) for field in DIRECT_OPTIONS if getattr(options, field)}
    region = options.region or DEFAULT_REGION
    if options.stack:
        outputs = read_stack(options.stack, region, options.endpoint_url)
        missing = [key for field, key in STACK_OUTPUTS.items() if field not in direct and key not in outputs]
        if missing:
            raise NotConfigured(
                f"stack {options.stack!r} has no output {', '.join(missing)}; is it an InfiniteTalk stack? "
                "Pass the resources with --bucket, --jobs-table and --ledger-table instead."
            )
        names = {field: direct.get(field) or outputs[key] for field, key in STACK_OUTPUTS.items()}
        return Connection(**names, region=region, endpoint_url=options.endpoint_url, source=f"stack {options.stack}")
    if direct:
        missing = [flag for field, flag in DIRECT_OPTIONS.items() if field not in direct]
        if missing:
            raise NotConfigured(
                f"{', '.join(DIRECT_OPTIONS[f] for f in direct)} given but {' and '.join(missing)} missing: "
                "pass all three (or --stack NAME to read them from a deployed stack)"
            )
        return Connection(**direct, region=region, endpoint_url=options.endpoint_url, source="command-line options")
    return _from_local_stack_file(options)


def _from_local_stack_file(options: ConnectionOptions) -> Connection:
    path = options.local_stack_file or DEFAULT_LOCAL_STACK_FILE
    if not path.is_file():
        if options.local_stack_file is not None:
            raise NotConfigured(f"--local-stack-file {path} does not exist; start the local stack with `make up`")
        raise NotConfigured(
            f"no stack to talk to: pass --stack NAME for a deployed stack, or --bucket, --jobs-table and "
            f"--ledger-table; for the local stack run `make up` (it writes {path}) or pass --local-stack-file PATH"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        names = {field: str(document[field]) for field in DIRECT_OPTIONS}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotConfigured(f"{path} is not a local stack connection file ({exc!r}); restart the local stack") from exc
    return Connection(
        **names,
        region=options.region or str(document.get("region") or DEFAULT_REGION),
        endpoint_url=options.endpoint_url or document.get("endpoint_url"),
        access_key_id=document.get("aws_access_key_id"),
        secret_access_key=document.get("aws_secret_access_key"),
        source=str(path),
    )


class Clients:
    """The S3 and DynamoDB clients of one invocation, built once and shared by every step."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        session = boto3.session.Session(
            region_name=connection.region,
            aws_access_key_id=connection.access_key_id,
            aws_secret_access_key=connection.secret_access_key,
        )
        s3_config = Config(signature_version="s3v4", s3={"addressing_style": "path"} if connection.endpoint_url else {})
        self.s3: S3Client = session.client(
            "s3", endpoint_url=connection.endpoint_url, config=CLIENT_CONFIG.merge(s3_config)
        )
        self.dynamodb: DynamoDBClient = session.client(
            "dynamodb", endpoint_url=connection.endpoint_url, config=CLIENT_CONFIG
        )

    @cached_property
    def bucket(self) -> MediaBucket:
        return MediaBucket(self.s3, self.connection.bucket)

    @cached_property
    def jobs(self) -> JobRepository:
        return JobRepository(self.dynamodb, self.connection.jobs_table, self.connection.ledger_table)
