"""The console's HTTP server on 127.0.0.1 over an in-process AWS (moto) with the template's bucket and tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
import httpx
import pytest
from moto import mock_aws

from infinitetalk_console.server import Console, ConsoleServer
from infinitetalk_console.views import StackReader
from infinitetalk_core.budget_alerts import BudgetAlertStore
from infinitetalk_core.repository import JobRepository
from infinitetalk_core.storage import MediaBucket
from tests.cli.conftest import BUCKET, JOBS_TABLE, LEDGER_TABLE, table_properties

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUDGET_MICROS = 2_000_000


@dataclass
class Served:
    s3: S3Client
    jobs: JobRepository
    alerts: BudgetAlertStore
    console: Console
    url: str
    http: httpx.Client

    def keys(self) -> dict[str, str]:
        listed = self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        return {item["Key"]: item["ETag"] for item in listed}

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        json: object = None,
    ) -> httpx.Response:
        """A request as the console's own page sends it: its token, its origin."""
        headers = {"X-Console-Token": self.console.token, "Origin": self.url}
        return self.http.request(method, path, headers=headers, params=params, content=content, json=json)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        dynamodb = boto3.client("dynamodb")
        s3.create_bucket(Bucket=BUCKET)
        dynamodb.create_table(TableName=JOBS_TABLE, **table_properties("JobsTable"))
        dynamodb.create_table(TableName=LEDGER_TABLE, **table_properties("LedgerTable"))
        jobs = JobRepository(dynamodb, JOBS_TABLE, LEDGER_TABLE)
        alerts = BudgetAlertStore(dynamodb, LEDGER_TABLE)
        reader = StackReader(
            bucket=MediaBucket(s3, BUCKET), jobs=jobs, alerts=alerts, budget_micros=BUDGET_MICROS, source="a test"
        )
        console = Console(reader, s3)
        server = ConsoleServer(console, 0)
        server.start()
        try:
            with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as http:
                yield Served(s3, jobs, alerts, console, server.url, http)
        finally:
            server.stop()
