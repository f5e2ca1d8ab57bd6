"""The sweep that makes lost messages cost minutes, not jobs.

Each status a job can stall in has one remedy: ask WaveSpeed about overdue webhooks (and end, with
the money it may owe shown, a job whose result stays unreadable too long), re-queue lost submits and
fetches, and look up in WaveSpeed's prediction history every submission whose answer was lost: its
task is adopted, or, only when the history proves there is none, the job is submitted again.
Jobs waiting for the API key stay put while it is still a placeholder and are re-queued once it is set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .callbacks import WebhookOutcome, record_prediction
from .credentials import CredentialNotSet
from .lost_submits import Adopt, Ambiguous, ListedTask, NoTask, SubmitSpan, Undecided, Verdict, decide, merged_windows
from .models import FailureKind, Job, JobStatus, ModelName, usd_text
from .observability import logger, metrics
from .pipeline import WHAT_TO_DO, Pipeline, ResumeJob
from .repository import StaleTransition, TaskHeldByAnotherJob
from .submit_states import api_key_missing, is_waiting_for_api_key, mark_uncertain
from .wavespeed import Prediction, TaskUnavailable, WaveSpeedError, is_task_id

# Jobs whose task is unknown: a lost answer is decided only against all of them, so none may be missed.
DOUBT_STATUSES = (JobStatus.SUBMITTING, JobStatus.UNCERTAIN, JobStatus.HELD)
LOOKED_UP = frozenset({JobStatus.UNCERTAIN, JobStatus.HELD})
MAX_IN_DOUBT = 5_000
MAX_HISTORY_PAGES = 200
# A span this close to the history's far edge may already have lost its task from it.
COVERAGE_MARGIN = timedelta(hours=1)
OPERATOR_ACTION = (
    "If WaveSpeed's webhook does not settle it, open each candidate's result (GET /predictions/<task id>/result) "
    "and compare its video with the job's inputs, then invoke the stack's ReconcileFunction with "
    '{"resolve_job": "<job id>", "task_id": "<its task id>"} (or "task_id": null if none of them is its own; '
    "the job is then submitted again)."
)


def reconcile(pipeline: Pipeline) -> dict[str, int]:
    settings = pipeline.settings
    now = pipeline.clock()
    overdue = now - timedelta(seconds=settings.webhook_overdue_seconds)
    stalled = now - timedelta(seconds=settings.submit_stall_seconds)
    counts: Counter[str] = Counter()
    key_missing = cache(lambda: api_key_missing(pipeline))  # read once per sweep, and only if needed
    remedies: list[tuple[JobStatus, datetime, Callable[[Job], str]]] = [
        (JobStatus.SUBMITTED, overdue, lambda job: ask_wavespeed(job, pipeline)),
        (JobStatus.REPORTED, overdue, lambda job: requeue_fetch(job, pipeline)),
        (JobStatus.RECEIVED, stalled, lambda job: requeue_submit(job, pipeline, key_missing)),
        (JobStatus.SUBMITTING, stalled, lambda job: give_up_on_answer(job, pipeline)),
    ]
    for status, since_before, remedy in remedies:
        for job in pipeline.jobs.in_status(status, since_before):
            # One job's trouble must not stop the sweep for every job behind it.
            try:
                counts[remedy(job)] += 1
            except Exception:  # noqa: BLE001 - logged with its traceback and counted
                logger.exception("reconcile could not carry a job on", extra={"job_id": job.job_id})
                counts["errors"] += 1
    try:
        counts.update(resolve_lost_submits(pipeline))
    except Exception:  # noqa: BLE001 - the sweep's other remedies already ran; the next sweep tries again
        logger.exception("reconcile could not look up lost submit answers")
        counts["errors"] += 1

    for name, value in counts.items():
        metrics.add_metric(name=f"Reconcile_{name}", unit="Count", value=value)
    # A quiet sweep is the normal case; only sweeps that found something are worth a line.
    (logger.info if counts else logger.debug)("reconcile", extra=dict(counts))
    return dict(counts)


def reconcile_event(event: dict[str, Any], pipeline: Pipeline) -> dict[str, int]:
    """The function's entry: a scheduled sweep, or an operator's decision about a held job."""
    if "resolve_job" in event:
        return {resolve_held(OperatorDecision.model_validate(event), pipeline): 1}
    return reconcile(pipeline)


# ---- submitted jobs: ask, and give up on a result that stays unreadable ------------------------


def ask_wavespeed(job: Job, pipeline: Pipeline) -> str:
    assert job.task_id is not None
    try:
        prediction = pipeline.wavespeed.result(job.task_id)
    except CredentialNotSet:
        logger.warning("cannot ask WaveSpeed: the API key is not set", extra={"job_id": job.job_id})
        return "waiting_for_api_key"
    except TaskUnavailable as exc:
        # WaveSpeed no longer knows the task (results expire): the fetch path settles it once.
        logger.warning("WaveSpeed refuses the task's result", extra={"job_id": job.job_id, "error": str(exc)})
        pipeline.jobs.transition(job, JobStatus.REPORTED, [JobStatus.SUBMITTED])
        pipeline.queues.send_fetch(job.job_id)
        return "result_refused"
    except WaveSpeedError as exc:
        logger.warning("could not ask WaveSpeed", extra={"job_id": job.job_id, "error": str(exc)})
        return result_unreadable(job, str(exc), pipeline)
    outcome = record_prediction(prediction, job.job_id, pipeline)
    if outcome is WebhookOutcome.ACCEPTED:
        return "recovered"
    if job.result_unreadable_since is not None:
        with suppress(StaleTransition):  # moved on meanwhile: nothing left to note
            pipeline.jobs.transition(job, JobStatus.SUBMITTED, [JobStatus.SUBMITTED], result_unreadable_since=None)
    return "still_running"


def result_unreadable(job: Job, error: str, pipeline: Pipeline) -> str:
    """Count from the first failed read; past the limit the job ends, its estimate kept as possibly owed."""
    now = pipeline.clock()
    since = job.result_unreadable_since
    # Noting the first failure moves the row (status_since); any later move means the count is stale.
    if since is None or job.status_since - since > timedelta(seconds=1):
        with suppress(StaleTransition):  # moved on meanwhile: nothing left to note
            pipeline.jobs.transition(job, JobStatus.SUBMITTED, [JobStatus.SUBMITTED], result_unreadable_since=now)
        return "result_unavailable"
    limit = pipeline.settings.result_unreadable_limit_seconds
    if (now - since).total_seconds() < limit:
        return "result_unavailable"
    reason = (
        f"WaveSpeed's result for task {job.task_id} could not be read for {limit} s (since {since:%Y-%m-%d %H:%M} "
        f"UTC; last answer: {error}); the task may have run and been billed: {usd_text(job.reserved_micros)} "
        "(the estimate) is kept against the month's budget as possibly owed"
    )
    end_holding_estimate(job, FailureKind.RESULT_UNREADABLE, reason, [JobStatus.SUBMITTED], pipeline)
    return "result_unreadable_failed"


def end_holding_estimate(
    job: Job, kind: FailureKind, reason: str, from_statuses: list[JobStatus], pipeline: Pipeline
) -> None:
    """End a job that may owe WaveSpeed money nobody can confirm: the hold stays, the error file shows it."""
    try:
        failed = pipeline.jobs.transition(job, JobStatus.FAILED, from_statuses, failure_kind=kind, error=reason)
    except StaleTransition:
        return
    metrics.add_metric(name="PossiblyOwedMicroDollars", unit="Count", value=job.reserved_micros)
    logger.error("job ended with money possibly owed", extra={"job_id": job.job_id, "reason": reason})
    pipeline.write_error(failed, [reason], WHAT_TO_DO[kind], {"possibly_owed_usd": usd_text(job.reserved_micros)})
    pipeline.announce(failed)


# ---- the other stalls -------------------------------------------------------------------------


def requeue_fetch(job: Job, pipeline: Pipeline) -> str:
    """Hand a reported job to the fetch again, but not forever: a fetch that never succeeds ends the job."""
    limit = pipeline.settings.fetch_give_up_seconds
    if (pipeline.clock() - job.status_since).total_seconds() >= limit:
        reason = (
            f"the finished task {job.task_id} could not be fetched for {limit} s (reported at "
            f"{job.status_since:%Y-%m-%d %H:%M} UTC); WaveSpeed billed it: {usd_text(job.reserved_micros)} "
            "(the estimate) is kept against the month's budget as possibly owed"
        )
        end_holding_estimate(job, FailureKind.RESULT_UNREADABLE, reason, [JobStatus.REPORTED], pipeline)
        return "fetch_given_up"
    pipeline.queues.send_fetch(job.job_id)
    return "fetch_requeued"


def requeue_submit(job: Job, pipeline: Pipeline, key_missing: Callable[[], bool]) -> str:
    """Send a stalled job back to submit, unless it already waits for a key that is still not set.

    A waiting job is counted each sweep (the alarm's metric), but not re-queued: that would only
    make it wait again. A stalled job not yet marked as waiting goes to submit, which marks it.
    """
    if is_waiting_for_api_key(job) and key_missing():
        metrics.add_metric(name="SubmitWaitingForApiKey", unit="Count", value=1)
        return "waiting_for_api_key"
    pipeline.queues.send_submit(ResumeJob(job_id=job.job_id))
    return "submit_requeued"


def give_up_on_answer(job: Job, pipeline: Pipeline) -> str:
    mark_uncertain(job, pipeline, "the submitting run stopped before recording WaveSpeed's answer")
    return "marked_uncertain"


# ---- lost submit answers: the prediction history decides ---------------------------------------


class HistoryUnreadable(Exception):
    """The history could not be read whole: no verdict may be drawn from it this sweep."""


class HistoryItem(BaseModel):
    """What matching needs of a history item; an item without it is a doubt, not something to skip."""

    model_config = ConfigDict(extra="ignore")

    id: str
    model: str
    created_at: datetime

    @field_validator("id")
    @classmethod
    def _task_id(cls, value: str) -> str:
        if not is_task_id(value):
            raise ValueError("not a WaveSpeed task id")
        return value

    @field_validator("created_at")
    @classmethod
    def _zoned(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def resolve_lost_submits(pipeline: Pipeline) -> Counter[str]:
    """Look up every lost submit answer whose span the history is complete for, model by model."""
    settings = pipeline.settings
    now = pipeline.clock()
    counts: Counter[str] = Counter()
    margin = timedelta(seconds=settings.history_clock_skew_seconds)
    # Read in the order jobs move (submitting -> uncertain -> held), so a job moving meanwhile is seen.
    in_doubt: dict[str, Job] = {}
    for status in DOUBT_STATUSES:
        found = pipeline.jobs.in_status(status, now + timedelta(seconds=1), limit=MAX_IN_DOUBT)
        if len(found) >= MAX_IN_DOUBT:
            logger.error("too many jobs in doubt to decide any exactly", extra={"status": status.value})
            counts["lost_submit_too_many"] += 1
            return counts
        in_doubt.update((job.job_id, job) for job in found)
    spans = {job_id: span for job_id, job in in_doubt.items() if (span := span_of(job, now, pipeline)) is not None}
    if not any(span.ready for span in spans.values()):
        return counts
    reach_back = now - timedelta(seconds=settings.history_coverage_seconds) + COVERAGE_MARGIN
    for job_id, span in list(spans.items()):
        if span.ready and span.started - margin < reach_back:
            counts[settle_beyond_history(in_doubt[job_id], pipeline)] += 1
            del spans[job_id]
    for model in ModelName:
        of_model = [span for span in spans.values() if span.model is model]
        if any(span.ready for span in of_model):
            counts.update(resolve_model(model, of_model, in_doubt, pipeline))
    return counts


def span_of(job: Job, now: datetime, pipeline: Pipeline) -> SubmitSpan | None:
    if job.spec is None:
        return None
    settings = pipeline.settings
    started = job.submit_started_at or job.created_at
    ended = None if job.status is JobStatus.SUBMITTING else (job.submit_ended_at or job.status_since)
    settled_after = timedelta(seconds=settings.history_clock_skew_seconds + settings.submit_grace_seconds)
    ready = job.status in LOOKED_UP and ended is not None and now >= ended + settled_after
    return SubmitSpan(job.job_id, job.spec.model, started, ended, ready)


def resolve_model(model: ModelName, spans: list[SubmitSpan], jobs: dict[str, Job], pipeline: Pipeline) -> Counter[str]:
    counts: Counter[str] = Counter()
    margin = timedelta(seconds=pipeline.settings.history_clock_skew_seconds)
    ready = [span for span in spans if span.ready]
    try:
        listed = read_history(pipeline, model, merged_windows(ready, margin))
    except HistoryUnreadable as exc:
        # A failed or partial read is doubt: nothing is settled and nothing is sent again.
        logger.warning(
            "prediction history unreadable; lost answers wait", extra={"model": model.value, "error": str(exc)}
        )
        counts["history_unavailable"] += len(ready)
        return counts
    # Every task id the pipeline learned (a submit answer, a webhook, the history) is held in the same
    # write that recorded it, so one strongly consistent read of the holders is the whole truth.
    held = set(pipeline.jobs.task_holders(task.task_id for task in listed))
    unheld = [task for task in listed if task.task_id not in held]
    for verdict in decide(spans, unheld, margin):
        try:
            counts.update(apply_verdict(verdict, jobs, pipeline))
        except Exception:  # noqa: BLE001 - one verdict's trouble must not stop the others
            logger.exception("could not carry out a lost-answer verdict", extra={"verdict": repr(verdict)})
            counts["errors"] += 1
    return counts


def read_history(
    pipeline: Pipeline, model: ModelName, windows: Iterable[tuple[datetime, datetime]]
) -> list[ListedTask]:
    """Every task of the model created in the windows, read to the last page; raises ``HistoryUnreadable``."""
    found: dict[str, ListedTask] = {}
    for start, end in windows:
        for task in read_window(pipeline, model, start, end):
            found[task.task_id] = task
    return list(found.values())


def read_window(pipeline: Pipeline, model: ModelName, start: datetime, end: datetime) -> list[ListedTask]:
    size = pipeline.settings.history_page_size
    tasks: list[ListedTask] = []
    total: int | None = None
    seen = 0
    for page in range(1, MAX_HISTORY_PAGES + 1):
        try:
            answer = pipeline.wavespeed.history(
                page=page, page_size=size, model=model, created_after=start, created_before=end
            )
        except WaveSpeedError as exc:
            raise HistoryUnreadable(f"page {page}: {exc}") from exc
        if total is not None and answer.total != total:
            raise HistoryUnreadable(f"the history changed while it was read ({total} then {answer.total} tasks)")
        total = answer.total
        for raw in answer.items:
            try:
                item = HistoryItem.model_validate(raw)
            except ValidationError as exc:
                raise HistoryUnreadable(
                    f"page {page} holds an item that cannot be read: {exc.errors()[0]['msg']}"
                ) from exc
            seen += 1
            if item.model == model.value and start <= item.created_at <= end:
                tasks.append(ListedTask(item.id, item.model, item.created_at, raw))
        if seen >= total or len(answer.items) < size:
            break
    else:
        raise HistoryUnreadable(f"more than {MAX_HISTORY_PAGES} pages")
    if seen != total:
        raise HistoryUnreadable(f"the history promised {total} tasks and listed {seen}")
    return tasks


def apply_verdict(verdict: Verdict, jobs: dict[str, Job], pipeline: Pipeline) -> Counter[str]:
    if isinstance(verdict, Adopt):
        return Counter({adopt(jobs[verdict.job_id], verdict.task.task_id, verdict.task.item, pipeline): 1})
    if isinstance(verdict, NoTask):
        return Counter({submit_again(jobs[verdict.job_id], pipeline): 1})
    if isinstance(verdict, Ambiguous):
        return hold(verdict, jobs, pipeline)
    if isinstance(verdict, Undecided):
        return Counter({"lost_submit_waiting": len(verdict.job_ids)})
    raise TypeError(verdict)


def adopt(job: Job, task_id: str, item: dict[str, Any], pipeline: Pipeline) -> str:
    """Record the task as the job's (and hold it for the job): from here it is delivered and charged as usual."""
    try:
        adopted = pipeline.jobs.record_task(job, JobStatus.SUBMITTED, list(LOOKED_UP), task_id, error=None)
    except TaskHeldByAnotherJob as exc:
        logger.error(
            "a task found for a lost answer is held by another job", extra={"job_id": job.job_id, "error": str(exc)}
        )
        return "lost_submit_conflict"
    except StaleTransition:
        return "lost_submit_moved_on"
    metrics.add_metric(name="JobsSubmitted", unit="Count", value=1)
    logger.info("lost submit answer found in WaveSpeed's history", extra={"job_id": job.job_id, "task_id": task_id})
    pipeline.announce(adopted)
    try:
        prediction = Prediction.model_validate(item)
    except ValidationError:
        return "lost_submit_adopted"  # the result poll reads it when the webhook is overdue
    if prediction.is_final:
        record_prediction(prediction, job.job_id, pipeline)
    return "lost_submit_adopted"


def submit_again(job: Job, pipeline: Pipeline) -> str:
    """The history proves the submission made no task: send it again, a bounded number of times."""
    settings = pipeline.settings
    if job.resubmissions >= settings.max_resubmissions:
        reason = (
            f"WaveSpeed's answer was lost on {job.resubmissions + 1} submission(s) and its prediction history "
            f"shows none of them made a task (last: {job.error or 'answer lost'}); nothing was charged"
        )
        pipeline.fail_before_task(job, FailureKind.SUBMIT_FAILED, reason, list(LOOKED_UP))
        return "lost_submit_failed"
    try:
        pipeline.jobs.transition(
            job,
            JobStatus.RECEIVED,
            list(LOOKED_UP),
            resubmissions=job.resubmissions + 1,
            error=None,
            submit_ended_at=None,
        )
    except StaleTransition:
        return "lost_submit_moved_on"
    pipeline.queues.send_submit(ResumeJob(job_id=job.job_id))
    metrics.add_metric(name="LostSubmitsResubmitted", unit="Count", value=1)
    logger.info(
        "no task was made by the lost submission (proven by the history); submitting again",
        extra={"job_id": job.job_id, "resubmission": job.resubmissions + 1},
    )
    return "lost_submit_resubmitted"


def hold(verdict: Ambiguous, jobs: dict[str, Job], pipeline: Pipeline) -> Counter[str]:
    """Never guess: hold every job of the knot, say what is known, and count it each sweep (the alarm)."""
    message = (
        f"held, not guessed: {verdict.reason}. Candidate tasks: {', '.join(verdict.task_ids)}; jobs that may own "
        f"them: {', '.join(verdict.job_ids)}. {OPERATOR_ACTION}"
    )
    counts: Counter[str] = Counter()
    newly_held = False
    for job_id in verdict.job_ids:
        job = jobs[job_id]
        counts["held_ambiguous"] += 1
        if job.status is JobStatus.HELD and job.error == message:
            continue
        newly_held = True
        ended = job.submit_ended_at or job.status_since
        try:
            held = pipeline.jobs.transition(job, JobStatus.HELD, list(LOOKED_UP), error=message, submit_ended_at=ended)
        except StaleTransition:
            continue
        pipeline.write_error(
            held,
            [message],
            "Do not upload again: WaveSpeed may have made this video, and a new upload is billed again. "
            "The operator has been alerted; the video is delivered here once it is settled.",
            {"possibly_owed_usd": usd_text(job.reserved_micros)},
        )
    # Said loudly once; the count above is the alarm's metric for as long as they stay held.
    (logger.error if newly_held else logger.info)(
        "lost submit answers held for an operator", extra={"jobs": verdict.job_ids, "tasks": verdict.task_ids}
    )
    return counts


def settle_beyond_history(job: Job, pipeline: Pipeline) -> str:
    """The history no longer reaches the submission: nobody can prove a task was or was not made."""
    reason = (
        f"the submission's answer was lost ({job.error or 'answer lost'}) and WaveSpeed's history, which keeps "
        f"{pipeline.settings.history_coverage_seconds // 86_400} days, no longer reaches back to it; whether a task "
        f"was made cannot be proven, so {usd_text(job.reserved_micros)} (the estimate) is kept as possibly owed"
    )
    end_holding_estimate(job, FailureKind.SUBMIT_UNKNOWN, reason, list(LOOKED_UP), pipeline)
    return "lost_submit_unresolvable"


# ---- an operator's decision ---------------------------------------------------------------------


class OperatorDecision(BaseModel):
    """``{"resolve_job": "<job id>", "task_id": "<task id>" | null}``: which task a held job's is, or none."""

    model_config = ConfigDict(extra="forbid")

    resolve_job: str
    task_id: str | None

    @field_validator("task_id")
    @classmethod
    def _task_id(cls, value: str | None) -> str | None:
        if value is not None and not is_task_id(value):
            raise ValueError("task_id must be a WaveSpeed task id (32 lowercase hex characters) or null")
        return value


class DecisionRefused(Exception):
    """The decision does not fit the job or the task; nothing was changed."""


def resolve_held(decision: OperatorDecision, pipeline: Pipeline) -> str:
    # Found among the held and uncertain jobs (few), with the sweep's own query.
    found = [
        job
        for status in LOOKED_UP
        for job in pipeline.jobs.in_status(status, pipeline.clock() + timedelta(seconds=1), MAX_IN_DOUBT)
        if job.job_id == decision.resolve_job
    ]
    job = found[0] if found else None
    if job is None or job.spec is None:
        raise DecisionRefused(f"{decision.resolve_job} is not a held or uncertain job")
    if decision.task_id is None:
        logger.info("operator: the held job made no task", extra={"job_id": job.job_id})
        return submit_again(job, pipeline)
    try:
        prediction = pipeline.wavespeed.result(decision.task_id)
    except WaveSpeedError as exc:
        raise DecisionRefused(f"WaveSpeed does not show task {decision.task_id}: {exc}") from exc
    if prediction.model and prediction.model != job.spec.model.value:
        raise DecisionRefused(
            f"task {decision.task_id} is a {prediction.model} task, the job is {job.spec.model.value}"
        )
    logger.info("operator: the held job's task", extra={"job_id": job.job_id, "task_id": decision.task_id})
    return adopt(job, decision.task_id, prediction.model_dump(mode="json"), pipeline)
