"""What each page shows, read through the core (jobs, bucket, ledger, alerts) and shaped for templates.

Nothing here writes to the stack, and nothing is escaped here either: templates escape every value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from infinitetalk_cli.render import MONTH_PATTERN, ago, seconds_text
from infinitetalk_cli.waiting import error_document, job_of_drop, newest_upload
from infinitetalk_core.budget_alerts import BudgetAlert, BudgetAlertStore, crossed_thresholds
from infinitetalk_core.intake import role_of
from infinitetalk_core.media import EXTENSIONS
from infinitetalk_core.models import (
    ROLE_KIND,
    TERMINAL_STATUSES,
    FailureKind,
    Job,
    JobStatus,
    LedgerEntry,
    MediaKind,
    MonthTotal,
    usd_text,
)
from infinitetalk_core.pipeline import RESULT_FILE
from infinitetalk_core.repository import JobRepository
from infinitetalk_core.storage import MediaBucket, outputs_prefix

from .chart import BudgetChart, DailyChart, budget_chart, daily_chart, series_label

# Media links live minutes, not the hours a pipeline URL needs: a page reload makes new ones.
PRESIGN_SECONDS = 600
LIST_LIMIT = 200
SCAN_LIMIT = 5_000
# Failures that happen before WaveSpeed has a task: their timeline ends after "received".
FAILED_BEFORE_TASK = frozenset(
    {FailureKind.REFUSED_BY_API, FailureKind.SUBMIT_UNKNOWN, FailureKind.SUBMIT_FAILED, FailureKind.BUDGET}
)


@dataclass(frozen=True)
class StackReader:
    """The stack as the console reads it; ``budget_micros`` is ``None`` when the budget is not known."""

    bucket: MediaBucket
    jobs: JobRepository
    alerts: BudgetAlertStore
    budget_micros: int | None
    source: str


def job_month(job: Job) -> str:
    """The month a job's money belongs to; refused jobs hold none, so the month they were made."""
    return job.month or job.created_at.strftime("%Y-%m")


# ---- the job list --------------------------------------------------------------------------
@dataclass(frozen=True)
class JobFilters:
    name: str = ""
    status: JobStatus | None = None
    month: str = ""
    problems: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> JobFilters:
        """Filters from a query string; values that are not filters are ignored and named in ``problems``."""
        problems: list[str] = []
        name = query.get("name", "").strip()[:100]
        status: JobStatus | None = None
        if raw := query.get("status", "").strip():
            try:
                status = JobStatus(raw)
            except ValueError:
                problems.append(f"status {raw!r} is not one of {', '.join(s.value for s in JobStatus)}")
        month = query.get("month", "").strip()
        if month and not MONTH_PATTERN.match(month):
            problems.append(f"month {month!r}: use YYYY-MM, for example 2026-11")
            month = ""
        return cls(name=name, status=status, month=month, problems=tuple(problems))

    def matches(self, job: Job) -> bool:
        if self.name and self.name.lower() not in job.job_name.lower():
            return False
        if self.status is not None and job.status is not self.status:
            return False
        return not self.month or job_month(job) == self.month

    def query(self) -> dict[str, str]:
        values = {"name": self.name, "status": self.status.value if self.status else "", "month": self.month}
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class JobRow:
    job_id: str
    name: str
    status: str
    model: str
    resolution: str
    age: str
    created_at: datetime
    estimate: str
    charge: str
    error: str


def job_row(job: Job, now: datetime) -> JobRow:
    return JobRow(
        job_id=job.job_id,
        name=job.job_name,
        status=job.status.value,
        model=job.spec.model.short if job.spec else "-",
        resolution=job.spec.resolution.value if job.spec else "-",
        age=ago(job.created_at, now),
        created_at=job.created_at,
        estimate=usd_text(job.estimate_micros) if job.estimate_micros else "-",
        charge=usd_text(job.charged_micros) if job.charged_micros is not None else "-",
        error=job.error or "",
    )


def list_jobs(reader: StackReader, filters: JobFilters, now: datetime) -> list[JobRow]:
    """Newest first, at most ``LIST_LIMIT`` (a scan of the jobs table: it is sized for people, not for batches)."""
    jobs = reader.jobs.recent(SCAN_LIMIT)
    return [job_row(job, now) for job in jobs if filters.matches(job)][:LIST_LIMIT]


# ---- one job -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One stage of a job: ``state`` is done, current, failed, pending or skipped (never reached by a finished job)."""

    label: str
    state: str
    at: datetime | None = None
    note: str = ""


@dataclass(frozen=True)
class MediaLink:
    label: str
    key: str
    kind: str  # image, audio, video or file
    url: str | None
    size: int | None

    @property
    def missing(self) -> bool:
        return self.url is None


@dataclass(frozen=True)
class ErrorReport:
    problems: list[str]
    what_to_do: str
    failure_kind: str
    inputs_untouched: bool | None
    written_at: str
    key: str


@dataclass(frozen=True)
class Fact:
    label: str
    value: str


@dataclass
class JobPage:
    job: Job
    steps: list[Step]
    inputs: list[MediaLink]
    outputs: list[MediaLink]
    result: list[Fact] = field(default_factory=list)
    result_link: MediaLink | None = None
    error: ErrorReport | None = None
    ledger: LedgerEntry | None = None
    others: list[JobRow] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.job.status in TERMINAL_STATUSES


def kind_of(key: str) -> str:
    """How to show a stored file: by its role's kind, else by its extension."""
    filename = key.rsplit("/", 1)[-1]
    if (role := role_of(filename)) is not None:
        return ROLE_KIND[role].value
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    for kind, extensions in EXTENSIONS.items():
        if extension in extensions:
            return kind.value
    return "file"


def media_link(bucket: MediaBucket, label: str, key: str, kind: str | None = None) -> MediaLink:
    stored = bucket.head(key)
    url = bucket.presign(key, PRESIGN_SECONDS) if stored is not None else None
    return MediaLink(label, key, kind or kind_of(key), url, stored.size if stored else None)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def timeline(
    job: Job, result: Mapping[str, Any] | None, error: ErrorReport | None, entry: LedgerEntry | None
) -> list[Step]:
    """Received, submitted, reported, then delivered or failed, each with the best time the stack keeps.

    The job row keeps when it was made and when it first reached each later stage; rows written before
    it kept them fall back on ``result.json`` (WaveSpeed's own times). A stage whose time is not kept says so.
    """
    status = job.status
    timings = (result or {}).get("timings") or {}
    since = job.status_since
    order = [JobStatus.RECEIVED, JobStatus.SUBMITTED, JobStatus.REPORTED]
    reached = {
        JobStatus.RECEIVED: 0,
        JobStatus.SUBMITTING: 0,
        JobStatus.UNCERTAIN: 0,
        JobStatus.HELD: 0,
        JobStatus.SUBMITTED: 1,
        JobStatus.REPORTED: 2,
        JobStatus.DELIVERED: 3,
    }
    if status in {JobStatus.FAILED, JobStatus.REJECTED}:
        reached[status] = 0 if status is JobStatus.REJECTED or job.failure_kind in FAILED_BEFORE_TASK else 2
    last = reached[status]
    submitted_at = _parse_time(timings.get("wavespeed_created_at"))
    reported_at = None
    if submitted_at is not None and isinstance(timings.get("inference_ms"), int):
        reported_at = submitted_at + timedelta(milliseconds=int(timings["inference_ms"]))
    known: dict[JobStatus, tuple[datetime | None, str]] = {
        JobStatus.RECEIVED: (job.created_at, ""),
        JobStatus.SUBMITTED: (job.submitted_at, "")
        if job.submitted_at
        else (submitted_at, "task created, by WaveSpeed's clock")
        if submitted_at
        else (None, ""),
        JobStatus.REPORTED: (job.reported_at, "")
        if job.reported_at
        else (reported_at, "generation finished, by WaveSpeed's timings")
        if reported_at
        else (None, ""),
    }
    steps: list[Step] = []
    for index, stage in enumerate(order):
        at, note = known[stage]
        if index < last or (index == last and status in TERMINAL_STATUSES):
            steps.append(Step(stage.value, "done", at, note or ("" if at else "time not kept")))
        elif index == last:
            detail = {
                JobStatus.SUBMITTING: "submitting to WaveSpeed",
                JobStatus.UNCERTAIN: "the submit answer was lost; looking for its task in WaveSpeed's history",
                JobStatus.HELD: "held for an operator: WaveSpeed's history cannot tell which task is this job's",
            }.get(status, "")
            steps.append(Step(stage.value, "current", at or since, detail))
        else:
            steps.append(Step(stage.value, "skipped" if status in TERMINAL_STATUSES else "pending"))
    if status is JobStatus.DELIVERED:
        delivered_at = entry.recorded_at if entry else _parse_time(timings.get("delivered_at")) or since
        steps.append(Step("delivered", "done", delivered_at))
    elif status in {JobStatus.FAILED, JobStatus.REJECTED}:
        at = _parse_time(error.written_at) if error else None
        steps.append(Step(status.value, "failed", at or since, job.failure_kind.value if job.failure_kind else ""))
    else:
        steps.append(Step("delivered", "pending"))
    return steps


def _facts(document: Mapping[str, Any], prefix: str = "") -> list[Fact]:
    facts: list[Fact] = []
    for key, value in document.items():
        label = f"{prefix}{key}".replace("_", " ")
        if isinstance(value, Mapping):
            facts.extend(_facts(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            facts.append(Fact(label, ", ".join(str(v) for v in value) or "-"))
        elif value is None:
            continue
        else:
            facts.append(Fact(label, str(value)))
    return facts


def _read_json(bucket: MediaBucket, key: str) -> dict[str, Any] | None:
    if bucket.head(key) is None:
        return None
    try:
        document = json.loads(bucket.read_bytes(key))
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def error_report(bucket: MediaBucket, job: Job) -> ErrorReport | None:
    document = error_document(bucket, job)
    if document is None:
        if job.status in {JobStatus.FAILED, JobStatus.REJECTED} and job.error:
            return ErrorReport([job.error], "", job.failure_kind.value if job.failure_kind else "", None, "", "")
        return None
    untouched = document.get("inputs_untouched")
    return ErrorReport(
        problems=[str(p) for p in document.get("problems") or []] or [job.error or "no problem was recorded"],
        what_to_do=str(document.get("what_to_do") or ""),
        failure_kind=str(document.get("failure_kind") or ""),
        inputs_untouched=untouched if isinstance(untouched, bool) else None,
        written_at=str(document.get("written_at") or ""),
        key=outputs_prefix(job.job_name) + "error.json",
    )


def ledger_line(jobs: JobRepository, job: Job) -> LedgerEntry | None:
    if not job.month or job.status not in {JobStatus.DELIVERED, JobStatus.FAILED}:
        return None
    _, entries = jobs.month(job.month)
    return next((e for e in entries if e.job_id == job.job_id), None)


def job_page(reader: StackReader, job_id: str, now: datetime) -> JobPage | None:
    job = reader.jobs.get(job_id)
    if job is None or not job.job_id:
        return None
    bucket = reader.bucket
    if job.spec is not None:
        inputs = [
            media_link(bucket, role.value, key, ROLE_KIND[role].value) for role, key in sorted(job.spec.inputs.items())
        ]
    else:
        inputs = [media_link(bucket, key.rsplit("/", 1)[-1], key) for key in job.drop_keys]
    outputs = [media_link(bucket, key.rsplit("/", 1)[-1], key, MediaKind.VIDEO.value) for key in job.output_keys]
    result: dict[str, Any] | None = None
    result_link = None
    if job.output_keys:
        result_key = job.output_keys[0].rsplit("/", 1)[0] + "/" + RESULT_FILE
        result = _read_json(bucket, result_key)
        if result is not None and result.get("job_id") not in {None, job.job_id}:
            result = None
        if result is not None:
            result_link = media_link(bucket, RESULT_FILE, result_key, "file")
    error = error_report(bucket, job) if job.status in {JobStatus.FAILED, JobStatus.REJECTED} else None
    entry = ledger_line(reader.jobs, job)
    others = [job_row(other, now) for other in reader.jobs.by_name(job.job_name) if other.job_id != job.job_id]
    return JobPage(
        job=job,
        steps=timeline(job, result, error, entry),
        inputs=inputs,
        outputs=outputs,
        result=_facts(result) if result else [],
        result_link=result_link,
        error=error,
        ledger=entry,
        others=others[:20],
    )


def job_for_name(reader: StackReader, name: str) -> Job | None:
    """The job made from the newest drop of a name, once the pipeline has made it."""
    return job_of_drop(reader.jobs.by_name(name), newest_upload(reader.bucket, name))


# ---- the month's money ---------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesTotal:
    label: str
    jobs: int
    billed_seconds: int
    charged: str
    micros: int


@dataclass(frozen=True)
class EntryRow:
    entry: LedgerEntry
    difference: str
    over: bool

    @property
    def estimate(self) -> str:
        return usd_text(self.entry.estimate_micros)

    @property
    def charge(self) -> str:
        return usd_text(self.entry.charged_micros)

    @property
    def output_seconds(self) -> str:
        return seconds_text(self.entry.output_seconds)


@dataclass
class MonthPage:
    month: str
    previous: str
    following: str
    overall: MonthTotal
    series: list[SeriesTotal]
    entries: list[EntryRow]
    daily: DailyChart
    budget: BudgetChart
    budget_micros: int | None
    alerts: list[BudgetAlert]
    lines_sum_micros: int

    @property
    def charged(self) -> str:
        return usd_text(self.overall.charged_micros)

    @property
    def held(self) -> str:
        return usd_text(self.overall.reserved_micros)

    @property
    def committed(self) -> str:
        return usd_text(self.overall.charged_micros + self.overall.reserved_micros)

    @property
    def lines_sum(self) -> str:
        return usd_text(self.lines_sum_micros)

    @property
    def sums_agree(self) -> bool:
        return self.lines_sum_micros == self.overall.charged_micros

    @property
    def budget_text(self) -> str:
        if self.budget_micros is None:
            return "not known"
        return usd_text(self.budget_micros) if self.budget_micros else "none"

    @property
    def committed_percent(self) -> str:
        if not self.budget_micros:
            return ""
        committed = self.overall.charged_micros + self.overall.reserved_micros
        return f"{committed * 100 / self.budget_micros:.1f}%"

    @property
    def thresholds_reached(self) -> list[int]:
        committed = self.overall.charged_micros + self.overall.reserved_micros
        return crossed_thresholds(committed, self.budget_micros or 0)


def shift_month(month: str, by: int) -> str:
    year, number = (int(part) for part in month.split("-"))
    index = year * 12 + number - 1 + by
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_page(reader: StackReader, month: str, today: date) -> MonthPage:
    totals, entries = reader.jobs.month(month)
    overall = next((t for t in totals if t.model is None), MonthTotal(month=month))
    series = sorted(
        (t for t in totals if t.model is not None and t.resolution is not None),
        key=lambda t: (str(t.model), str(t.resolution)),
    )
    ordered = sorted(entries, key=lambda e: e.recorded_at)
    rows = []
    for entry in ordered:
        difference = entry.charged_micros - entry.estimate_micros
        sign = "+" if difference > 0 else "-" if difference < 0 else ""
        rows.append(EntryRow(entry, f"{sign}{usd_text(abs(difference))}", difference > 0))
    budget = reader.budget_micros
    return MonthPage(
        month=month,
        previous=shift_month(month, -1),
        following=shift_month(month, 1),
        overall=overall,
        series=[
            SeriesTotal(
                series_label(t.model, t.resolution),  # type: ignore[arg-type]
                t.jobs,
                t.billed_seconds,
                usd_text(t.charged_micros),
                t.charged_micros,
            )
            for t in series
        ],
        entries=rows,
        daily=daily_chart(month, ordered),
        budget=budget_chart(month, ordered, overall.reserved_micros, budget or 0, today),
        budget_micros=budget,
        alerts=reader.alerts.for_month(month),
        lines_sum_micros=sum(e.charged_micros for e in entries),
    )


def months_of(rows: Sequence[JobRow]) -> list[str]:
    return sorted({row.created_at.strftime("%Y-%m") for row in rows}, reverse=True)
