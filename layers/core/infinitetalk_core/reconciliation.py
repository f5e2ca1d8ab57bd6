"""The sweep that makes lost messages cost minutes, not jobs.

Each status a job can stall in has one remedy: ask WaveSpeed about overdue webhooks, re-queue
lost submits and fetches, and settle submissions whose outcome stayed unknown past the grace period.
Jobs waiting for the API key stay put while it is still a placeholder and are re-queued once it is set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache

from .callbacks import WebhookOutcome, record_prediction
from .credentials import CredentialNotSet
from .models import FailureKind, Job, JobStatus
from .observability import logger, metrics
from .pipeline import Pipeline, ResumeJob
from .submission import api_key_missing, is_waiting_for_api_key, mark_uncertain
from .wavespeed import TaskUnavailable, WaveSpeedError


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
        (JobStatus.UNCERTAIN, now - timedelta(seconds=settings.submit_grace_seconds), lambda j: settle(j, pipeline)),
    ]
    for status, since_before, remedy in remedies:
        for job in pipeline.jobs.in_status(status, since_before):
            # One job's trouble must not stop the sweep for every job behind it.
            try:
                counts[remedy(job)] += 1
            except Exception:  # noqa: BLE001 - logged with its traceback and counted
                logger.exception("reconcile could not carry a job on", extra={"job_id": job.job_id})
                counts["errors"] += 1

    for name, value in counts.items():
        metrics.add_metric(name=f"Reconcile_{name}", unit="Count", value=value)
    # A quiet sweep is the normal case; only sweeps that found something are worth a line.
    (logger.info if counts else logger.debug)("reconcile", extra=dict(counts))
    return dict(counts)


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
        return "result_unavailable"
    outcome = record_prediction(prediction, job.job_id, pipeline)
    return "recovered" if outcome is WebhookOutcome.ACCEPTED else "still_running"


def requeue_fetch(job: Job, pipeline: Pipeline) -> str:
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


def settle(job: Job, pipeline: Pipeline) -> str:
    grace = pipeline.settings.submit_grace_seconds
    reason = (
        f"submission outcome unknown ({job.error or 'answer lost'}) and no webhook within "
        f"{grace} s; not resubmitted, to avoid paying twice"
    )
    pipeline.fail_before_task(job, FailureKind.SUBMIT_UNKNOWN, reason, [JobStatus.UNCERTAIN])
    return "uncertain_failed"
