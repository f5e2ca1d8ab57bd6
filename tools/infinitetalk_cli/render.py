"""Tables and lines for people: jobs, month totals and ledger lines, money always through ``usd_text``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from infinitetalk_core.models import Job, JobStatus, LedgerEntry, MonthTotal, usd_text
from infinitetalk_core.submit_states import is_waiting_for_api_key

ERROR_WIDTH = 60
MONTH_PATTERN = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
# Below this many columns the tables take their narrow layout: fewer, whole cells.
WIDE_COLUMNS = 120
MONEY_COLUMNS = frozenset({"estimate", "charge", "charged", "reserved", "rate"})
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


def jobs_table(jobs: Sequence[Job], now: datetime, title: str, narrow: bool = False) -> RenderableType:
    """Every job on one row. Narrow (under ``WIDE_COLUMNS``): the job id stands for the name, and errors
    follow the table whole instead of squeezing every column."""
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD, pad_edge=not narrow
    )
    if not narrow:
        table.add_column("name", overflow="fold")
    table.add_column("job id", overflow="fold", min_width=12)
    table.add_column("status", no_wrap=True)
    table.add_column("model", overflow="fold")
    # Short values a person reads whole: a money cell split over two lines ("$0.1" / "5") misleads.
    for column in ("res", "estimate", "charge", "age") + (() if narrow else ("updated",)):
        table.add_column(column, no_wrap=True, justify="right" if column in MONEY_COLUMNS else "left")
    if not narrow:
        table.add_column("error", overflow="fold", ratio=1)
    for job in jobs:
        cells: list[RenderableType] = [
            job.job_id,
            status_text(job.status),
            job.spec.model.short if job.spec else "-",
            job.spec.resolution.value if job.spec else "-",
            usd_text(job.estimate_micros) if job.estimate_micros else "-",
            usd_text(job.charged_micros) if job.charged_micros is not None else "-",
            ago(job.created_at, now),
        ]
        if narrow:
            table.add_row(*cells)
        else:
            table.add_row(job.job_name, *cells, ago(job.status_since, now), error_text(job))
    if not narrow:
        return table
    errors = [
        Text.assemble(f"{job.job_id}: ", (job.error, "yellow" if is_waiting_for_api_key(job) else "red"))
        for job in jobs
        if job.error
    ]
    return Group(table, *errors)


def error_text(job: Job) -> Text:
    """A job waiting for the API key is not in error: its message is shown whole, as what to do."""
    if is_waiting_for_api_key(job):
        return Text(job.error or "", style="yellow")
    return Text(shorten(job.error), style="red")


def api_key_wait_note(waiting: int, stack: str | None) -> str:
    jobs = "1 job waits" if waiting == 1 else f"{waiting} jobs wait"
    return (
        f"{jobs} for the WaveSpeed API key; nothing is sent to WaveSpeed until it is set: "
        f"run `infinitetalk setup --stack {stack or 'NAME'}`"
    )


def _scope(total: MonthTotal) -> str:
    if total.model is None:
        return "all"
    return f"{total.model.short} {total.resolution.value if total.resolution else ''}".strip()


def totals_table(totals: Sequence[MonthTotal], month: str) -> Table:
    table = Table(title=f"Totals for {month}", title_justify="left")
    table.add_column("scope")
    for column in ("jobs", "billed s", "charged", "reserved"):
        table.add_column(column, justify="right", no_wrap=True)
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


def entries_table(entries: Sequence[LedgerEntry], month: str, narrow: bool = False) -> Table:
    """One line per ledger entry. Narrow: model, resolution and rule set go under the job id."""
    table = Table(
        title=f"Ledger lines for {month}",
        title_justify="left",
        box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD,
        pad_edge=not narrow,
    )
    table.add_column("job", overflow="fold", min_width=None if narrow else 12)
    if not narrow:
        for column in ("model", "res", "outcome", "rule set"):
            table.add_column(column, overflow="fold")
    else:
        table.add_column("outcome", no_wrap=True)
    for column in ("input s", "output s", "billed s", "rate", "estimate", "charge"):
        table.add_column(column.removesuffix(" s") if narrow else column, justify="right", no_wrap=True)
    for entry in sorted(entries, key=lambda e: e.recorded_at):
        outcome = Text(entry.outcome, style="green" if entry.outcome == "delivered" else "red")
        numbers = [
            seconds_text(entry.input_seconds),
            seconds_text(entry.output_seconds),
            seconds_text(entry.billed_seconds),
            f"{usd_text(entry.rate_micros_per_second)}/s",
            usd_text(entry.estimate_micros),
            usd_text(entry.charged_micros),
        ]
        if narrow:
            job = Text.assemble(entry.job_id, "\n", (f"{entry.model.short} {entry.resolution.value}", "dim"))
            job.append(f" {entry.rule_set}", style="dim")
            table.add_row(job, outcome, *numbers)
        else:
            table.add_row(entry.job_id, entry.model.short, entry.resolution.value, outcome, entry.rule_set, *numbers)
    return table


def no_job_line(name: str, newest_upload: datetime | None) -> str:
    """What ``status NAME`` says when no job has that name: whether anything is waiting in the inbox."""
    if newest_upload is None:
        return f"no job named {name!r}: nothing was dropped under that name (no inbox/{name}/ nor inbox/{name}.json)"
    return (
        f"no job named {name!r} yet: its drop was last uploaded to at {newest_upload:%Y-%m-%d %H:%M:%S} UTC; "
        "a folder becomes a job once job.json (or its manifest) is in, or once it has been quiet for the settle time"
    )


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
    shown = job.error if is_waiting_for_api_key(job) else shorten(job.error)
    detail = f" ({shown})" if job.error and job.status not in _STYLES else ""
    return f"{stamp}  {job.job_id}  {job.status.value}{detail}"
