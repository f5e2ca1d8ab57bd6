"""The sweep that makes lost messages cost minutes, not jobs.

Each status a job can stall in has one remedy: ask WaveSpeed about overdue webhooks, re-queue
lost submits and fetches, and settle submissions whose outcome stayed unknown past the grace period.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from .callbacks import WebhookOutcome, record_prediction
from .models import FailureKind, JobStatus
from .observability import logger, metrics
from .pipeline import Pipeline, ResumeJob
from .submission import mark_uncertain
from .wavespeed import WaveSpeedError


def reconcile(pipeline: Pipeline) -> dict[str, int]:
    settings = pipeline.settings
    now = pipeline.clock()
    overdue = now - timedelta(seconds=settings.webhook_overdue_seconds)
    counts: Counter[str] = Counter()

    for job in pipeline.jobs.in_status(JobStatus.SUBMITTED, overdue):
        assert job.task_id is not None
        try:
            prediction = pipeline.wavespeed.result(job.task_id)
        except WaveSpeedError as exc:
            logger.warning("could not ask WaveSpeed", extra={"job_id": job.job_id, "error": str(exc)})
            counts["result_unavailable"] += 1
            continue
        outcome = record_prediction(prediction, job.job_id, pipeline)
        counts["recovered" if outcome is WebhookOutcome.ACCEPTED else "still_running"] += 1

    for job in pipeline.jobs.in_status(JobStatus.REPORTED, overdue):
        pipeline.queues.send_fetch(job.job_id)
        counts["fetch_requeued"] += 1

    for job in pipeline.jobs.in_status(JobStatus.RECEIVED, now - timedelta(seconds=settings.submit_stall_seconds)):
        pipeline.queues.send_submit(ResumeJob(job_id=job.job_id))
        counts["submit_requeued"] += 1

    for job in pipeline.jobs.in_status(JobStatus.SUBMITTING, now - timedelta(seconds=settings.submit_stall_seconds)):
        mark_uncertain(job, pipeline, "the submitting run stopped before recording WaveSpeed's answer")
        counts["marked_uncertain"] += 1

    for job in pipeline.jobs.in_status(JobStatus.UNCERTAIN, now - timedelta(seconds=settings.submit_grace_seconds)):
        reason = (
            f"submission outcome unknown ({job.error or 'answer lost'}) and no webhook within "
            f"{settings.submit_grace_seconds} s; not resubmitted, to avoid paying twice"
        )
        pipeline.fail_before_task(job, FailureKind.SUBMIT_UNKNOWN, reason, [JobStatus.UNCERTAIN])
        counts["uncertain_failed"] += 1

    for name, value in counts.items():
        metrics.add_metric(name=f"Reconcile_{name}", unit="Count", value=value)
    # A quiet sweep is the normal case; only sweeps that found something are worth a line.
    (logger.info if counts else logger.debug)("reconcile", extra=dict(counts))
    return dict(counts)
