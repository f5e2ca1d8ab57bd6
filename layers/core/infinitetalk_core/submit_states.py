"""The states a submission parks a job in when it cannot go on: waiting for the key, or uncertain.

Apart from ``submission`` so the reconcile sweep, which moves jobs out of them, need not import the
media checks (FFmpeg's bindings, Pillow) at its cold start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from .credentials import CredentialNotSet
from .models import Job, JobStatus
from .observability import logger, metrics
from .repository import StaleTransition

if TYPE_CHECKING:
    from .pipeline import Pipeline

# What a job waiting for its key says, in the jobs table and so in ``infinitetalk status``.
API_KEY_WAIT = "waiting for the WaveSpeed API key: run `infinitetalk setup --stack NAME`"


def api_key_missing(pipeline: Pipeline) -> bool:
    """True while the key's secret holds a placeholder. A failed read is no verdict: the submit retries it."""
    try:
        pipeline.api_key()
    except CredentialNotSet:
        return True
    except GetParameterError:
        return False
    return False


def is_waiting_for_api_key(job: Job) -> bool:
    return job.status is JobStatus.RECEIVED and job.error == API_KEY_WAIT


def wait_for_api_key(job: Job, pipeline: Pipeline, from_statuses: list[JobStatus]) -> None:
    """Park a job until the key is set: nothing is sent and nothing fails; reconcile carries it on then."""
    try:
        pipeline.jobs.transition(job, JobStatus.RECEIVED, from_statuses, error=API_KEY_WAIT)
    except StaleTransition:
        return
    metrics.add_metric(name="SubmitWaitingForApiKey", unit="Count", value=1)
    logger.warning("job waits for the WaveSpeed API key", extra={"job_id": job.job_id})


def mark_uncertain(job: Job, pipeline: Pipeline, reason: str) -> None:
    try:
        pipeline.jobs.transition(job, JobStatus.UNCERTAIN, [JobStatus.SUBMITTING], error=reason)
    except StaleTransition:
        return
    metrics.add_metric(name="SubmitOutcomeUnknown", unit="Count", value=1)
    logger.warning("submit outcome unknown; waiting for a webhook", extra={"job_id": job.job_id, "reason": reason})
