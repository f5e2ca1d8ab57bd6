"""What a new user runs into first: waiting on a misspelt name, narrow terminals, unknown names."""

from __future__ import annotations

import re
import time
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from infinitetalk_cli.main import app
from infinitetalk_core.billing import Charge
from infinitetalk_core.models import FailureKind, JobStatus, LedgerEntry, ModelName, Resolution, usd_text, utc_now
from tests.cli.conftest import BUCKET, Stack
from tests.cli.factories import make_job

runner = CliRunner()
MONEY = re.compile(r"\$\d+\.\d+")


def test_wait_on_a_name_never_dropped_says_so_at_once_with_exit_2(stack: Stack) -> None:
    started = time.monotonic()
    result = runner.invoke(app, ["wait", "anchr", "--timeout", "30", "--poll", "0.05"])

    assert result.exit_code == 2, result.output
    assert time.monotonic() - started < 5
    assert "nothing was dropped as 'anchr'" in result.stderr
    assert "inbox/anchr/" in result.stderr


def test_wait_on_a_dropped_folder_not_picked_up_yet_still_waits(stack: Stack) -> None:
    stack.s3.put_object(Bucket=BUCKET, Key="inbox/anchor/image.png", Body=b"\x89PNG")

    result = runner.invoke(app, ["wait", "anchor", "--timeout", "0.3", "--poll", "0.05"])

    assert result.exit_code == 3, result.output
    assert "not picked up yet" in result.stderr


def test_status_of_a_name_with_files_but_no_job_says_what_it_waits_for(stack: Stack) -> None:
    stack.s3.put_object(Bucket=BUCKET, Key="inbox/anchor/image.png", Body=b"\x89PNG")

    result = runner.invoke(app, ["status", "anchor"])

    assert result.exit_code == 0, result.output
    assert "no job named 'anchor' yet" in result.stdout
    assert "job.json" in result.stdout


def settled_line(stack: Stack, name: str, charged: int, model: ModelName, resolution: Resolution) -> None:
    job = make_job(name, JobStatus.REPORTED, reserved_micros=150_000, estimate_micros=150_000, task_id=f"t-{name}")
    stack.jobs.create_with_reservation(job, budget_micros=0)
    charge = Charge(rule_set=job.rule_set, billed_seconds=5, rate_micros_per_second=30_000, micros=charged)
    entry = LedgerEntry(
        job_id=job.job_id,
        job_name=name,
        month=job.month,
        model=model,
        resolution=resolution,
        outcome="delivered",
        rule_set=job.rule_set,
        input_seconds=Decimal("4.2"),
        output_seconds=Decimal("4.2"),
        billed_seconds=5,
        rate_micros_per_second=30_000,
        estimate_micros=150_000,
        charged_micros=charged,
        task_id=f"t-{name}",
        recorded_at=utc_now(),
    )
    stack.jobs.settle(
        job, JobStatus.DELIVERED, [JobStatus.REPORTED], entry, charge, charged_micros=charged, reserved_micros=0
    )


@pytest.mark.parametrize("columns", ["80", "100"])
def test_money_cells_of_status_and_ledger_stay_whole_in_a_narrow_terminal(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    settled_line(stack, "a-rather-long-job-name-for-a-terminal", 1_234_567, ModelName.VIDEO, Resolution.P720)
    settled_line(stack, "short", 150_000, ModelName.MULTI, Resolution.P480)
    stack.jobs.put_new(
        make_job(
            "refused",
            JobStatus.REJECTED,
            digest="fedcba987654",
            failure_kind=FailureKind.INVALID_INPUT,
            estimate_micros=12_345_670,
            error="image.png is named as image but its bytes are plain text; audio is 700.0 s long, over the limit",
        )
    )
    month = utc_now().strftime("%Y-%m")

    status = runner.invoke(app, ["status"])
    ledger = runner.invoke(app, ["ledger", "--month", month])

    assert status.exit_code == 0, status.output
    assert ledger.exit_code == 0, ledger.output
    in_both = {usd_text(1_234_567), usd_text(150_000)}
    # A cell split over two lines ("$1.23" / "4567") leaves only its first part on a line.
    assert in_both | {usd_text(12_345_670)} <= set(MONEY.findall(status.stdout)), status.stdout
    assert in_both <= set(MONEY.findall(ledger.stdout)), ledger.stdout
    assert "bytes are plain text; audio is 700.0 s long, over the limit" in status.stdout
