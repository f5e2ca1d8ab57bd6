"""`infinitetalk console`: the web console for the stack the command finds, on 127.0.0.1, until Ctrl-C."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from infinitetalk_cli.connection import ConnectionOptions
from infinitetalk_cli.main import app
from infinitetalk_console import ConsoleServer, budget_micros_for
from infinitetalk_core.models import JobStatus
from tests.cli.conftest import Stack
from tests.cli.factories import make_job

runner = CliRunner()


def test_console_serves_the_stacks_jobs_on_loopback_until_interrupted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.jobs.put_new(make_job("anchor", JobStatus.DELIVERED))
    seen: dict[str, object] = {}
    serve = ConsoleServer.serve_forever

    def serve_once(server: ConsoleServer) -> None:
        """Serve in the background, look at two pages as a person would, then press Ctrl-C."""
        threading.Thread(target=serve, args=(server,), daemon=True).start()
        seen["url"] = server.url
        answer = httpx.get(server.url + "/jobs", timeout=5, trust_env=False)
        seen["status"], seen["body"] = answer.status_code, answer.text
        money = httpx.get(server.url + "/money", timeout=5, trust_env=False).text
        seen["budget"] = 'id="budget">$3.50<' in money
        raise KeyboardInterrupt

    monkeypatch.setattr(ConsoleServer, "serve_forever", serve_once)
    result = runner.invoke(app, ["console", "--port", "0", "--budget-usd", "3.50"])

    assert result.exit_code == 0, result.output
    assert str(seen["url"]).startswith("http://127.0.0.1:")
    assert f"at {seen['url']}" in result.stdout
    assert seen["status"] == 200 and "anchor-0123456789ab" in str(seen["body"])
    assert seen["budget"] is True
    assert "console stopped" in result.stderr


def test_console_refuses_a_budget_that_is_not_money(stack: Stack) -> None:
    result = runner.invoke(app, ["console", "--port", "0", "--budget-usd", "lots"])
    assert result.exit_code == 2
    assert "--budget-usd: 'lots' is not an amount of dollars" in result.stderr


def test_the_budget_comes_from_the_local_stacks_file_and_is_unknown_for_named_resources(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({"monthly_budget_usd": "12.5"}))
    assert budget_micros_for(ConnectionOptions(local_stack_file=path)) == 12_500_000
    assert budget_micros_for(ConnectionOptions(bucket="b", jobs_table="j", ledger_table="l")) is None
    assert budget_micros_for(ConnectionOptions(bucket="b"), explicit_usd="0") == 0
