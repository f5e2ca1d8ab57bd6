"""An in-process AWS (moto) with the template's bucket and tables, and small real media files."""

from __future__ import annotations

import struct
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from infinitetalk_core.repository import JobRepository
from local_stack.template import Template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

ROOT = Path(__file__).resolve().parents[2]
BUCKET, JOBS_TABLE, LEDGER_TABLE = "media", "jobs", "ledger"
TABLE_PARAMETERS = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")
CONNECTION_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "INFINITETALK_STACK",
    "INFINITETALK_BUCKET",
    "INFINITETALK_JOBS_TABLE",
    "INFINITETALK_LEDGER_TABLE",
    "INFINITETALK_LOCAL_STACK_FILE",
)


@dataclass
class Stack:
    s3: S3Client
    dynamodb: DynamoDBClient
    jobs: JobRepository

    def keys(self, prefix: str = "") -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]

    def read_json_text(self, key: str) -> str:
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()


def table_properties(logical_id: str, **parameters: str) -> dict[str, Any]:
    """The table's key schema and indexes exactly as the template declares them, for these parameters."""
    template = Template()
    template.set_parameters(parameters)
    properties = template.resolve(template.resources[logical_id]["Properties"])
    return {k: v for k, v in properties.items() if k in TABLE_PARAMETERS}


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, no stray connection settings, and tables wide enough to read."""
    for name in CONNECTION_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        dynamodb.create_table(TableName=JOBS_TABLE, **table_properties("JobsTable"))
        dynamodb.create_table(TableName=LEDGER_TABLE, **table_properties("LedgerTable"))
        monkeypatch.setenv("INFINITETALK_BUCKET", BUCKET)
        monkeypatch.setenv("INFINITETALK_JOBS_TABLE", JOBS_TABLE)
        monkeypatch.setenv("INFINITETALK_LEDGER_TABLE", LEDGER_TABLE)
        yield Stack(s3=s3, dynamodb=dynamodb, jobs=JobRepository(dynamodb, JOBS_TABLE, LEDGER_TABLE))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, side: int = 128) -> Path:
    """A real PNG of the smallest size the core accepts: it checks an image's bytes, not just its name."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    pixels = zlib.compress((b"\x00" + b"\xff\x80\x00" * side) * side)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))
    return path


def write_wav(path: Path, seconds: float, rate: int = 8_000) -> Path:
    """Silent mono audio of a known playing time (a low rate keeps long files small)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(rate * seconds))
    return path
