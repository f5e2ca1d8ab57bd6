"""Which stack the command talks to: a deployed stack, direct names, the local stack's file, or a clear refusal."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from infinitetalk_cli.connection import Clients, ConnectionOptions, NotConfigured, resolve
from infinitetalk_cli.main import app
from infinitetalk_core.models import JobStatus
from tests.cli.conftest import BUCKET, JOBS_TABLE, LEDGER_TABLE, Stack
from tests.cli.factories import make_job

runner = CliRunner()


def write_stack_file(path: Path, **overrides: object) -> Path:
    """The connection file exactly as the local stack writes it."""
    document: dict[str, object] = {
        "endpoint_url": "http://127.0.0.1:45123",
        "region": "eu-west-1",
        "bucket": BUCKET,
        "jobs_table": JOBS_TABLE,
        "ledger_table": LEDGER_TABLE,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        **overrides,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: v for k, v in document.items() if v is not None}))
    return path


def test_the_local_stack_file_gives_the_endpoint_region_credentials_and_names(tmp_path: Path) -> None:
    path = write_stack_file(tmp_path / "stack.json")

    connection = resolve(ConnectionOptions(local_stack_file=path))
    clients = Clients(connection)

    assert (connection.bucket, connection.jobs_table, connection.ledger_table) == (BUCKET, JOBS_TABLE, LEDGER_TABLE)
    assert clients.s3.meta.endpoint_url == "http://127.0.0.1:45123"
    assert clients.dynamodb.meta.endpoint_url == "http://127.0.0.1:45123"
    assert clients.s3.meta.region_name == "eu-west-1"
    assert connection.access_key_id == "testing"


def test_the_local_stack_file_is_found_in_the_working_directory_and_options_override_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_stack_file(tmp_path / ".local-stack" / "stack.json")
    monkeypatch.chdir(tmp_path)

    connection = resolve(ConnectionOptions(endpoint_url="http://localhost:9", region="us-west-2"))

    assert connection.source == ".local-stack/stack.json"
    assert (connection.endpoint_url, connection.region) == ("http://localhost:9", "us-west-2")


def test_status_reads_the_tables_named_in_the_local_stack_file(stack: Stack, tmp_path: Path) -> None:
    stack.jobs.put_new(make_job("anchor", JobStatus.SUBMITTED))
    path = write_stack_file(tmp_path / "stack.json", endpoint_url=None, region="us-east-1")

    result = runner.invoke(
        app,
        ["--local-stack-file", str(path), "status"],
        env={"INFINITETALK_BUCKET": None, "INFINITETALK_JOBS_TABLE": None, "INFINITETALK_LEDGER_TABLE": None},
    )

    assert result.exit_code == 0, result.output
    assert "anchor-0123456789ab" in result.stdout


def test_with_nothing_configured_the_command_names_the_options_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    result = runner.invoke(app, ["status"])

    assert result.exit_code == 2
    for option in ("--stack NAME", "--bucket, --jobs-table and --ledger-table", "--local-stack-file PATH"):
        assert option in result.stderr


def test_some_direct_names_without_the_others_are_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--bucket", "media", "ledger"])

    assert result.exit_code == 2
    assert "--jobs-table and --ledger-table missing" in result.stderr


def test_a_named_local_stack_file_that_is_missing_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--local-stack-file", str(tmp_path / "gone.json"), "status"])

    assert result.exit_code == 2
    assert "gone.json does not exist" in result.stderr


def test_a_deployed_stack_is_found_by_its_outputs(stack: Stack) -> None:
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "BucketName": {"Value": BUCKET},
            "JobsTableName": {"Value": JOBS_TABLE},
            "LedgerTableName": {"Value": LEDGER_TABLE},
        },
    }
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="talk", TemplateBody=json.dumps(template)
    )
    stack.jobs.put_new(make_job("anchor", JobStatus.SUBMITTED))

    result = runner.invoke(
        app,
        ["--stack", "talk", "status"],
        env={"INFINITETALK_BUCKET": None, "INFINITETALK_JOBS_TABLE": None, "INFINITETALK_LEDGER_TABLE": None},
    )

    assert result.exit_code == 0, result.output
    assert "anchor-0123456789ab" in result.stdout
    with pytest.raises(NotConfigured, match="'absent' could not be read"):
        resolve(ConnectionOptions(stack="absent"))
