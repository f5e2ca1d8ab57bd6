"""`infinitetalk status` and `ledger` read back what the pipeline's repository wrote."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

from typer.testing import CliRunner

from infinitetalk_cli.main import app
from infinitetalk_core.billing import Charge, rule_book
from infinitetalk_core.models import FailureKind, JobStatus, LedgerEntry, ModelName, Resolution, utc_now
from tests.cli.conftest import Stack
from tests.cli.factories import make_job

runner = CliRunner()


def test_status_lists_recent_jobs_with_their_error(stack: Stack) -> None:
    stack.jobs.put_new(
        make_job(
            "anchor",
            JobStatus.REJECTED,
            failure_kind=FailureKind.INVALID_INPUT,
            error="image.png is named as image but its bytes are plain text",
        )
    )

    result = runner.invoke(app, ["status"])

    assert result.exit_code == 0, result.output
    for text in ("anchor", "anchor-0123456789ab", "rejected", "infinitetalk", "480p", "$0.24", "bytes are plain"):
        assert text in result.stdout


def test_status_of_a_name_shows_its_jobs_newest_first(stack: Stack) -> None:
    now = utc_now()
    stack.jobs.put_new(make_job("anchor", JobStatus.REJECTED, digest="older0000000", at=now - timedelta(hours=2)))
    stack.jobs.put_new(make_job("anchor", JobStatus.SUBMITTED, digest="newer0000000", at=now))
    stack.jobs.put_new(make_job("other", JobStatus.SUBMITTED))

    result = runner.invoke(app, ["status", "anchor"])

    assert result.exit_code == 0, result.output
    assert result.stdout.index("anchor-newer0000000") < result.stdout.index("anchor-older0000000")
    assert "other" not in result.stdout
    assert re.search(r"\b2h\b", result.stdout)


def test_status_of_an_unknown_name_says_so_without_the_exit_code_of_a_failed_job(stack: Stack) -> None:
    result = runner.invoke(app, ["status", "nobody"])

    assert result.exit_code == 0, result.output
    assert "no job named 'nobody': nothing was dropped under that name" in result.stdout


def test_ledger_shows_the_month_totals_and_a_settled_jobs_line(stack: Stack) -> None:
    job = make_job("anchor", JobStatus.REPORTED, reserved_micros=240_000, task_id="task-1")
    stack.jobs.create_with_reservation(job, budget_micros=0)
    rules = rule_book().get(job.rule_set)
    measured = Decimal("7.36")
    charge = rules.charge(
        Resolution.P480, rules.billable_seconds(input_seconds=Decimal("7.4"), output_seconds=measured)
    )
    entry = LedgerEntry(
        job_id=job.job_id,
        job_name=job.job_name,
        month=job.month,
        model=job.spec.model,  # type: ignore[union-attr]
        resolution=Resolution.P480,
        outcome="delivered",
        rule_set=charge.rule_set,
        input_seconds=Decimal("7.4"),
        output_seconds=measured,
        billed_seconds=charge.billed_seconds,
        rate_micros_per_second=charge.rate_micros_per_second,
        estimate_micros=job.estimate_micros,
        charged_micros=charge.micros,
        task_id="task-1",
        recorded_at=utc_now(),
    )
    stack.jobs.settle(
        job,
        JobStatus.DELIVERED,
        [JobStatus.REPORTED],
        entry,
        charge,
        charged_micros=charge.micros,
        billed_seconds=charge.billed_seconds,
        reserved_micros=0,
    )

    result = runner.invoke(app, ["ledger", "--month", job.month])

    assert result.exit_code == 0, result.output
    totals, lines = result.stdout.split("Ledger lines for")
    assert f"Totals for {job.month}" in totals
    assert "all" in totals and "infinitetalk 480p" in totals
    assert "$0.24" in totals  # 8 billed seconds at $0.03/s
    for text in ("anchor-0123456789ab", "delivered", "seeds-output-5s", "7.40", "7.36", "$0.03/s", "$0.24"):
        assert text in lines


def test_ledger_of_an_empty_month_and_a_malformed_month(stack: Stack) -> None:
    empty = runner.invoke(app, ["ledger", "--month", "1999-01"])
    malformed = runner.invoke(app, ["ledger", "--month", "2026-13"])

    assert empty.exit_code == 0
    assert "nothing in the ledger for 1999-01" in empty.stdout
    assert malformed.exit_code == 2
    assert "use YYYY-MM" in malformed.stderr


def test_ledger_shows_a_failed_tasks_line(stack: Stack) -> None:
    job = make_job("broken", JobStatus.REPORTED, reserved_micros=240_000, task_id="task-2")
    stack.jobs.create_with_reservation(job, budget_micros=0)
    charge = Charge(rule_set=job.rule_set, billed_seconds=0, rate_micros_per_second=30_000, micros=0)
    entry = LedgerEntry(
        job_id=job.job_id,
        job_name=job.job_name,
        month=job.month,
        model=ModelName.SINGLE,
        resolution=Resolution.P480,
        outcome="failed",
        rule_set=job.rule_set,
        input_seconds=Decimal("7.4"),
        output_seconds=None,
        billed_seconds=0,
        rate_micros_per_second=30_000,
        estimate_micros=job.estimate_micros,
        charged_micros=0,
        task_id="task-2",
        recorded_at=utc_now(),
    )
    stack.jobs.settle(job, JobStatus.FAILED, [JobStatus.REPORTED], entry, charge, reserved_micros=0)

    result = runner.invoke(app, ["ledger", "--month", job.month])

    assert result.exit_code == 0, result.output
    assert "broken-0123456789ab" in result.stdout and "failed" in result.stdout
