"""WaveSpeed's webhook: prove it, bind it to its job, record the finished status, queue the fetch.

A delivery moves a job only with a valid signature (the body) *and* the job's own token (the URL):
one conditional write checks the token, the status and the delivery id, records the task and
remembers the id, with no read before it. A refused delivery changes nothing and does not use up its id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .credentials import CredentialNotSet, require_webhook_secret
from .models import FailureKind, Job, JobStatus
from .observability import logger, metrics
from .pipeline import Pipeline
from .repository import DeliveryProof, ReportNotRecorded
from .wavespeed import Prediction, is_task_id
from .webhooks import (
    WebhookMalformed,
    WebhookNotForJob,
    WebhookRefusal,
    WebhookRejected,
    WebhookSecretNotSet,
    WebhookTooLarge,
    raw_body,
    same_token,
    verify_webhook,
    webhook_target,
)

# A finished task may move a job from these; out of FAILED only when the job was settled on a guess.
REPORTABLE_FROM = [JobStatus.SUBMITTED, JobStatus.SUBMITTING, JobStatus.UNCERTAIN, JobStatus.HELD, JobStatus.FAILED]
# A job settled on a guess (its answer lost, or its result unreadable) takes its own task's report still.
REPORTABLE_FAILURES = frozenset({FailureKind.SUBMIT_UNKNOWN, FailureKind.RESULT_UNREADABLE})


class WebhookOutcome(StrEnum):
    ACCEPTED = "accepted"
    REPLAY = "replay"
    ALREADY_RECORDED = "already_recorded"
    NOT_FINAL = "not_final"
    # Refusals: the report is not this job's.
    UNKNOWN_JOB = "unknown_job"
    WRONG_TOKEN = "wrong_token"  # noqa: S105 - an outcome, not a secret
    OTHER_TASK = "other_task"
    OTHER_MODEL = "other_model"


WEBHOOK_ROUTE = ("POST", "/webhooks/wavespeed")  # the template's one route on the HTTP API
JSON_HEADERS = {"content-type": "application/json"}

REFUSED = frozenset(
    {WebhookOutcome.UNKNOWN_JOB, WebhookOutcome.WRONG_TOKEN, WebhookOutcome.OTHER_TASK, WebhookOutcome.OTHER_MODEL}
)


class WebhookRequest(BaseModel):
    """One delivery as API Gateway hands it over: headers, the body (maybe base64) and the raw query."""

    model_config = ConfigDict(frozen=True)

    headers: Mapping[str, str] = Field(default_factory=dict)
    body: str | None = None
    is_base64_encoded: bool = False
    raw_query: str = ""


class HttpRoute(BaseModel):
    method: str
    path: str


class HttpRequestContext(BaseModel):
    http: HttpRoute


class HttpApiEvent(BaseModel):
    """An API Gateway HTTP API (payload format 2.0) event: the parts the webhook route reads.

    Read here rather than through an HTTP router: one route needs none, and the callback's cold start
    stays that of its few AWS clients.
    """

    model_config = ConfigDict(extra="ignore")

    raw_path: str = Field(alias="rawPath")
    raw_query_string: str = Field(default="", alias="rawQueryString")
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    is_base64_encoded: bool = Field(default=False, alias="isBase64Encoded")
    request_context: HttpRequestContext = Field(alias="requestContext")


def http_answer(status_code: int, payload: Mapping[str, str]) -> dict[str, Any]:
    """A proxy integration response with a JSON body."""
    return {"statusCode": status_code, "headers": JSON_HEADERS, "body": json.dumps(payload), "isBase64Encoded": False}


def answer_http_event(event: Mapping[str, Any], pipeline: Pipeline) -> dict[str, Any]:
    """The HTTP answer to one request: 200 with the outcome, or the refusal's status (4xx, 503 while unset)."""
    http = HttpApiEvent.model_validate(event)
    if (http.request_context.http.method, http.raw_path) != WEBHOOK_ROUTE:
        return http_answer(404, {"message": "Not Found"})
    request = WebhookRequest(
        headers=http.headers,
        body=http.body,
        is_base64_encoded=http.is_base64_encoded,
        raw_query=http.raw_query_string,
    )
    try:
        outcome = accept_webhook(request, pipeline)
    except WebhookRefusal as exc:
        if exc.status_code < 500:
            metrics.add_metric(name="WebhooksRejected", unit="Count", value=1)
            logger.warning("webhook refused", extra={"status": exc.status_code, "reason": str(exc)[:500]})
        return http_answer(exc.status_code, {"error": exc.answer})
    return http_answer(200, {"outcome": outcome.value})


def accept_webhook(request: WebhookRequest, pipeline: Pipeline) -> WebhookOutcome:
    """Raises a ``WebhookRefusal`` for anything that may not move the job it names; nothing changes then."""
    secret = webhook_secret(pipeline)
    body = raw_body(request.body, request.is_base64_encoded)
    webhook_id = verify_webhook(
        request.headers, body, secret, tolerance_seconds=pipeline.settings.webhook_tolerance_seconds
    )
    target = webhook_target(request.raw_query)
    prediction = read_prediction(body)
    outcome = record_prediction(prediction, target.job_id, pipeline, DeliveryProof(webhook_id, target.token))
    logger.info("webhook", extra={"job_id": target.job_id, "task_id": prediction.id, "outcome": outcome})
    if outcome in REFUSED:
        raise WebhookNotForJob(outcome.value)
    if outcome is WebhookOutcome.REPLAY:
        metrics.add_metric(name="WebhookReplays", unit="Count", value=1)
    return outcome


def webhook_secret(pipeline: Pipeline) -> str:
    """The real ``whsec_`` secret; while it is a placeholder every delivery is refused, loudly."""
    try:
        return require_webhook_secret(pipeline.webhook_secret())
    except CredentialNotSet as exc:
        metrics.add_metric(name="WebhookSecretNotSet", unit="Count", value=1)
        logger.error("webhook refused: the webhook secret is not set", extra={"reason": str(exc)})
        raise WebhookSecretNotSet(str(exc)) from exc


def read_prediction(body: bytes) -> Prediction:
    """The signed body as a finished prediction whose task id has WaveSpeed's shape."""
    try:
        prediction = Prediction.model_validate_json(body)
    except ValidationError as exc:
        raise WebhookMalformed(f"body is not a prediction: {exc.error_count()} problem(s)") from exc
    if not is_task_id(prediction.id):
        raise WebhookMalformed("the task id does not have WaveSpeed's shape")
    return prediction


def is_reportable(job: Job) -> bool:
    """The status rule of ``record_prediction``'s conditional write, for explaining a refusal."""
    return job.status in REPORTABLE_FROM and (
        job.status is not JobStatus.FAILED or job.failure_kind in REPORTABLE_FAILURES
    )


def record_prediction(
    prediction: Prediction, job_id: str | None, pipeline: Pipeline, proof: DeliveryProof | None = None
) -> WebhookOutcome:
    """Record a finished task for its job and queue the fetch; from a webhook (``proof``) or a result poll."""
    if not prediction.is_final:
        return WebhookOutcome.NOT_FINAL
    if not job_id:
        return WebhookOutcome.UNKNOWN_JOB
    try:
        pipeline.jobs.report_task(
            job_id,
            prediction.id,
            prediction.model,
            REPORTABLE_FROM,
            only_if_failure=REPORTABLE_FAILURES,
            proof=proof,
        )
    except ReportNotRecorded as exc:
        return explain(exc, prediction, job_id, proof, pipeline)
    pipeline.queues.send_fetch(job_id)
    metrics.add_metric(name="WebhooksAccepted", unit="Count", value=1)
    return WebhookOutcome.ACCEPTED


def explain(
    refusal: ReportNotRecorded, prediction: Prediction, job_id: str, proof: DeliveryProof | None, pipeline: Pipeline
) -> WebhookOutcome:
    """Why the conditional write did not happen, from the row as the write saw it (no second read)."""
    job = refusal.current
    extra = {"job_id": job_id, "task_id": prediction.id}
    if job is None:
        logger.warning("report for no known job", extra=extra)
        return WebhookOutcome.UNKNOWN_JOB
    if proof is not None and not same_token(job.webhook_token, proof.token):
        logger.warning("webhook without the job's token", extra=extra)
        return WebhookOutcome.WRONG_TOKEN
    if job.task_id and job.task_id != prediction.id:
        logger.error("report names another task than the job's", extra={**extra, "job_task_id": job.task_id})
        return WebhookOutcome.OTHER_TASK
    if prediction.model and job.spec and prediction.model != job.spec.model.value:
        logger.error("report for a task of another model than the job's", extra={**extra, "model": prediction.model})
        return WebhookOutcome.OTHER_MODEL
    if refusal.webhook_seen:
        return WebhookOutcome.REPLAY  # changes nothing; a fetch its first run failed to queue is reconcile's
    if is_reportable(job):
        # Status, task and model allowed the write: only the stored token digest can have refused it.
        logger.error("the job's stored token does not verify", extra=extra)
        return WebhookOutcome.WRONG_TOKEN
    if job.status is JobStatus.REPORTED:
        # Another delivery recorded it first and may have failed to queue its fetch; fetching is safe to repeat.
        pipeline.queues.send_fetch(job.job_id)
    return WebhookOutcome.ALREADY_RECORDED


__all__ = [
    "REFUSED",
    "WebhookMalformed",
    "WebhookNotForJob",
    "WebhookOutcome",
    "WebhookRefusal",
    "WebhookRejected",
    "WebhookRequest",
    "WebhookSecretNotSet",
    "WebhookTooLarge",
    "accept_webhook",
    "record_prediction",
]
