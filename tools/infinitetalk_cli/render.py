"""Tables and lines for people: jobs, month totals and ledger lines, money always through ``usd_text``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from rich.table import Table
from rich.text import Text

from infinitetalk_core.models import Job, JobStatus, LedgerEntry, MonthTotal, usd_text

ERROR_WIDTH = 60
_STYLES = {JobStatus.DELIVERED: "green", JobStatus.FAILED: "red", JobStatus.REJECTED: "red"}


def status_text(status: JobStatus) -> Text:
    return Text(status.value, style=_STYLES.get(status, "yellow"))


def ago(moment: datetime, now: datetime) -> str:
    """A coarse age: people scanning a table want '3m', not a timestamp."""
    seconds = max(0, int((now - moment).total_seconds()))
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def seconds_text(value: Decimal | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}"


def shorten(text: str | None, width: int = ERROR_WIDTH) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def jobs_table(jobs: Sequence[Job], now: datetime, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("job id", overflow="fold", min_width=12)
    table.add_column("status", no_wrap=True)
    for column in ("model", "res", "estimate", "charge", "age", "updated"):
        table.add_column(column, overflow="fold")
    table.add_column("error", overflow="fold", ratio=1)
    for job in jobs:
        table.add_row(
            job.job_name,
            job.job_id,
            status_text(job.status),
            job.spec.model.short if job.spec else "-",
            job.spec.resolution.value if job.spec else "-",
            usd_text(job.estimate_micros) if job.estimate_micros else "-",
            usd_text(job.charged_micros) if job.charged_micros is not None else "-",
            ago(job.created_at, now),
            ago(job.status_since, now),
            Text(shorten(job.error), style="red"),
        )
    return table


def _scope(total: MonthTotal) -> str:
    if total.model is None:
        return "all"
    return f"{total.model.short} {total.resolution.value if total.resolution else ''}".strip()


def totals_table(totals: Sequence[MonthTotal], month: str) -> Table:
    table = Table(title=f"Totals for {month}", title_justify="left")
    table.add_column("scope")
    for column in ("jobs", "billed s", "charged", "reserved"):
        table.add_column(column, justify="right")
    ordered = sorted(totals, key=lambda t: (t.model is not None, t.model or "", t.resolution or ""))
    for total in ordered:
        table.add_row(
            _scope(total),
            str(total.jobs),
            str(total.billed_seconds),
            usd_text(total.charged_micros),
            usd_text(total.reserved_micros),
            style="bold" if total.model is None else None,
        )
    return table


def entries_table(entries: Sequence[LedgerEntry], month: str) -> Table:
    table = Table(title=f"Ledger lines for {month}", title_justify="left")
    table.add_column("job", overflow="fold", min_width=12)
    for column in ("model", "res", "outcome", "rule set"):
        table.add_column(column, overflow="fold")
    for column in ("input s", "output s", "billed s", "rate", "estimate", "charge"):
        table.add_column(column, justify="right", overflow="fold")
    for entry in sorted(entries, key=lambda e: e.recorded_at):
        table.add_row(
            entry.job_id,
            entry.model.short,
            entry.resolution.value,
            Text(entry.outcome, style="green" if entry.outcome == "delivered" else "red"),
            entry.rule_set,
            seconds_text(entry.input_seconds),
            seconds_text(entry.output_seconds),
            seconds_text(entry.billed_seconds),
            f"{usd_text(entry.rate_micros_per_second)}/s",
            usd_text(entry.estimate_micros),
            usd_text(entry.charged_micros),
        )
    return table


def delivery_line(job: Job) -> str:
    """The length and the price of a delivered job, as the ledger recorded them."""
    parts = [f"video {seconds_text(job.output_seconds)} s"]
    if job.billed_seconds is not None:
        parts.append(f"billed {job.billed_seconds} s")
    if job.charged_micros is not None:
        parts.append(f"charged {usd_text(job.charged_micros)}")
    if job.rule_set:
        parts.append(f"rule set {job.rule_set}")
    return ", ".join(parts)


def change_line(job: Job | None, name: str, at: datetime) -> str:
    stamp = at.strftime("%H:%M:%S")
    if job is None:
        return f"{stamp}  waiting for the pipeline to pick up the drop {name!r}"
    detail = f" ({shorten(job.error)})" if job.error and job.status not in _STYLES else ""
    return f"{stamp}  {job.job_id}  {job.status.value}{detail}"
