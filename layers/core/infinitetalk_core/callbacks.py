"""WaveSpeed's webhook: prove it, record the finished status, queue the fetch, answer at once."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydantic import ValidationError

from .models import FailureKind, JobStatus
from .observability import logger, metrics
from .pipeline import Pipeline
from .repository import StaleTransition
from .wavespeed import Prediction
from .webhooks import WebhookRejected, verify_webhook

REPORTABLE_FROM = [JobStatus.SUBMITTED, JobStatus.SUBMITTING, JobStatus.UNCERTAIN, JobStatus.FAILED]


class WebhookOutcome(StrEnum):
    ACCEPTED = "accepted"
    REPLAY = "replay"
    ALREADY_RECORDED = "already_recorded"
    NOT_FINAL = "not_final"
    UNKNOWN_JOB = "unknown_job"


class MalformedWebhook(Exception):
    """Signed, but not a prediction we can read."""


def accept_webhook(headers: Mapping[str, str], body: bytes, job_id: str | None, pipeline: Pipeline) -> WebhookOutcome:
    """Raises ``WebhookRejected`` for anything not provably from WaveSpeed; changes nothing then."""
    webhook_id = verify_webhook(
        headers,
        body,
        pipeline.webhook_secret(),
        tolerance_seconds=pipeline.settings.webhook_tolerance_seconds,
    )
    if pipeline.jobs.webhook_seen(webhook_id):
        metrics.add_metric(name="WebhookReplays", unit="Count", value=1)
        return WebhookOutcome.REPLAY
    try:
        prediction = Prediction.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedWebhook(str(exc)) from exc
    outcome = record_prediction(prediction, job_id, pipeline)
    pipeline.jobs.remember_webhook(webhook_id)
    logger.info("webhook", extra={"job_id": job_id, "task_id": prediction.id, "outcome": outcome})
    return outcome


def record_prediction(prediction: Prediction, job_id: str | None, pipeline: Pipeline) -> WebhookOutcome:
    if not prediction.is_final:
        return WebhookOutcome.NOT_FINAL
    job = pipeline.jobs.get(job_id) if job_id else None
    if job is None:
        logger.warning("webhook for no known job", extra={"job_id": job_id, "task_id": prediction.id})
        return WebhookOutcome.UNKNOWN_JOB
    if job.task_id and job.task_id != prediction.id:
        logger.error(
            "webhook names another task than the job's",
            extra={"job_id": job.job_id, "task_id": prediction.id},
        )
        return WebhookOutcome.UNKNOWN_JOB
    if prediction.model and job.spec and prediction.model != job.spec.model.value:
        # The ?job= query is not signed: a task of another model cannot be this job's.
        logger.error(
            "webhook for a task of another model than the job's",
            extra={"job_id": job.job_id, "task_id": prediction.id, "model": prediction.model},
        )
        return WebhookOutcome.UNKNOWN_JOB
    try:
        pipeline.jobs.transition(
            job,
            JobStatus.REPORTED,
            REPORTABLE_FROM,
            only_if_failure=FailureKind.SUBMIT_UNKNOWN,
            task_id=prediction.id,
            failure_kind=None,
            error=None,
            event_published=False,
        )
    except StaleTransition:
        current = pipeline.jobs.get(job.job_id)
        if current is not None and current.status is JobStatus.REPORTED:
            # The first delivery may have failed to queue its fetch; fetching is safe to repeat.
            pipeline.queues.send_fetch(job.job_id)
        return WebhookOutcome.ALREADY_RECORDED
    pipeline.queues.send_fetch(job.job_id)
    metrics.add_metric(name="WebhooksAccepted", unit="Count", value=1)
    return WebhookOutcome.ACCEPTED


__all__ = ["MalformedWebhook", "WebhookOutcome", "WebhookRejected", "accept_webhook", "record_prediction"]
