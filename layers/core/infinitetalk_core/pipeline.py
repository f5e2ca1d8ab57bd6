"""Everything a function needs, built on first use once per cold start, plus the outcomes several steps share."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from . import clients
from .credentials import require_api_key
from .models import FailureKind, Job, JobStatus, iso, utc_now
from .observability import logger
from .repository import JobRepository, StaleTransition
from .settings import Settings, get_settings
from .storage import MediaBucket, outputs_prefix
from .webhooks import webhook_query

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from mypy_boto3_sqs import SQSClient

    from .events import EventPublisher
    from .wavespeed_client import WaveSpeedClient

ERROR_FILE = "error.json"
RESULT_FILE = "result.json"
MAX_SQS_DELAY_SECONDS = 900


class S3ObjectRef(BaseModel):
    key: str


class S3BucketRef(BaseModel):
    name: str


class S3Entity(BaseModel):
    bucket: S3BucketRef
    object: S3ObjectRef


class S3NotificationRecord(BaseModel):
    eventName: str  # noqa: N815 - S3's own field name
    # When S3 finished storing the object (ISO 8601); orders the files of a folder as they landed.
    eventTime: datetime | None = None  # noqa: N815
    s3: S3Entity


class S3Notification(BaseModel):
    """The part of an S3 event notification the pipeline reads; lenient about the rest."""

    Records: list[S3NotificationRecord]


class FolderCheck(BaseModel):
    """Look at a drop folder again once its settle time has passed."""

    kind: Literal["folder_check"] = "folder_check"
    name: str
    prefix: str
    # When the file whose arrival asked for this look landed (S3's eventTime); a check whose folder
    # has had a later file since is left to that file's own look.
    arrived_at: datetime | None = None


class ResumeJob(BaseModel):
    """Carry on with a job whose submission was interrupted before WaveSpeed took it."""

    kind: Literal["resume_job"] = "resume_job"
    job_id: str


class FetchRequest(BaseModel):
    """Fetch a finished task's outputs and settle its job."""

    job_id: str


@dataclass
class Queues:
    client: SQSClient
    submit_url: str
    fetch_url: str

    def send_submit(self, message: FolderCheck | ResumeJob, delay_seconds: int = 0) -> None:
        self.client.send_message(
            QueueUrl=self.submit_url,
            MessageBody=message.model_dump_json(),
            DelaySeconds=min(MAX_SQS_DELAY_SECONDS, max(0, delay_seconds)),
        )

    def send_fetch(self, job_id: str) -> None:
        self.client.send_message(QueueUrl=self.fetch_url, MessageBody=FetchRequest(job_id=job_id).model_dump_json())


@dataclass
class Pipeline:
    settings: Settings
    jobs: JobRepository
    bucket: MediaBucket
    wavespeed: WaveSpeedClient
    events: EventPublisher
    queues: Queues
    webhook_secret: Callable[[], str]
    # The WaveSpeed API key as stored; raises ``CredentialNotSet`` while the secret holds a placeholder.
    api_key: Callable[[], str]
    clock: Callable[[], datetime] = field(default=utc_now)
    sleep: Callable[[float], None] = field(default=time.sleep)

    def webhook_url_for(self, job: Job) -> str:
        """The callback URL names the job, so a task created by a lost answer still finds it, and carries
        the job's token: the signature covers only the body, so the token is what binds a delivery to its job."""
        separator = "&" if "?" in self.settings.webhook_url else "?"
        return f"{self.settings.webhook_url}{separator}{webhook_query(job.job_id, job.webhook_token)}"

    def write_error(self, job: Job, problems: list[str], what_to_do: str, extra: dict[str, Any] | None = None) -> str:
        """``extra``: further fields for this kind of file (for example the money a job may still owe)."""
        key = outputs_prefix(job.job_name) + ERROR_FILE
        document: dict[str, Any] = {
            "job_id": job.job_id,
            "job_name": job.job_name,
            "status": job.status.value,
            "failure_kind": job.failure_kind.value if job.failure_kind else None,
            "problems": problems,
            "what_to_do": what_to_do,
            "inputs": sorted(job.spec.inputs.values()) if job.spec else job.drop_keys,
            "inputs_untouched": True,
            "task_id": job.task_id,
            "written_at": iso(self.clock()),
            **(extra or {}),
        }
        self.bucket.put_json(key, document)
        return key

    def clear_error(self, job_name: str) -> None:
        """A new accepted job for a name makes an older error file about that name stale."""
        self.bucket.delete(outputs_prefix(job_name) + ERROR_FILE)

    def announce(self, job: Job) -> None:
        """Publish the job's state change, then remember it was published (at least once)."""
        if job.event_published:
            return
        self.events.publish(job)
        try:
            self.jobs.mark_published(job)
        except StaleTransition:
            logger.info("job moved on before its event was marked", extra={"job_id": job.job_id})

    def fail_before_task(self, job: Job, kind: FailureKind, error: str, from_statuses: list[JobStatus]) -> None:
        """End a job no WaveSpeed task is known for: release its budget hold, tell the user."""
        failed = job.model_copy(update={"status": JobStatus.FAILED, "failure_kind": kind, "error": error})
        try:
            self.jobs.settle(
                job,
                JobStatus.FAILED,
                from_statuses,
                None,
                None,
                failure_kind=kind,
                error=error,
                reserved_micros=0,
            )
        except StaleTransition:
            logger.info("job settled elsewhere", extra={"job_id": job.job_id})
            return
        self.write_error(failed, [error], WHAT_TO_DO[kind])
        self.announce(failed.model_copy(update={"reserved_micros": 0}))


WHAT_TO_DO: dict[FailureKind, str] = {
    FailureKind.INVALID_INPUT: "Fix the files or options listed in problems and upload the folder (or manifest) again; "
    "a new upload under the same name starts a new job. Your input files were not changed.",
    FailureKind.BUDGET: "Raise the MonthlyBudgetUsd parameter of the stack, or drop the job again next month.",
    FailureKind.REFUSED_BY_API: "WaveSpeed refused the request; fix what its message names and upload again.",
    FailureKind.GENERATION_FAILED: "WaveSpeed could not generate the video; check the image shows a clear face "
    "and the audio has speech, then upload again. Nothing was charged unless the ledger says so.",
    FailureKind.SUBMIT_UNKNOWN: "WaveSpeed's answer to the submission was lost and it could not be settled which "
    "task, if any, is this job's (see problems). It was not sent again, so you are never charged twice, and if "
    "WaveSpeed did run it, the video is still delivered here. Do not upload again before asking the operator: "
    "a new upload is a new job, billed again.",
    FailureKind.SUBMIT_FAILED: "WaveSpeed lost its answer to every submission of this job, and its prediction "
    "history proves none of them made a task: nothing was charged. Upload again once WaveSpeed is healthy.",
    FailureKind.RESULT_UNREADABLE: "WaveSpeed accepted the task (see task_id) but its result could not be read for "
    "too long. It may have billed the task, so the estimate is kept as possibly owed (possibly_owed_usd). Ask the "
    "operator to check the task with WaveSpeed; a new upload is a new job, billed again.",
    FailureKind.DELIVERY_FAILED: "WaveSpeed finished the task but refused to hand over its result or video "
    "(see problems). It billed the task, so the ledger charges the estimate. Upload again to run it anew.",
}


class SecretSource(Protocol):
    """What a secret reader needs of Powertools' ``SecretsProvider``: its cached ``get``."""

    def get(self, name: str, max_age: int | None = None) -> object: ...


class SecretsOnFirstRead:
    """A ``SecretsProvider`` (and its Secrets Manager client) made at the first read, not at the cold start."""

    def __init__(self, make: Callable[[], SecretsProvider]) -> None:
        self._make = make

    @cached_property
    def provider(self) -> SecretsProvider:
        return self._make()

    def get(self, name: str, max_age: int | None = None) -> object:
        return self.provider.get(name, max_age=max_age)


def secret_reader(provider: SecretSource, secret_id: str, max_age: int) -> Callable[[], str]:
    def read() -> str:
        value = provider.get(secret_id, max_age=max_age)
        if isinstance(value, bytes):
            value = value.decode()
        text = str(value).strip()
        if text.startswith("{"):
            # A JSON secret as the console writes it: take its only value. Anything else is
            # returned as it is, for the credential checks to refuse by name.
            try:
                parsed = json.loads(text)
            except ValueError:
                return text
            if isinstance(parsed, dict) and len(parsed) == 1:
                text = str(next(iter(parsed.values()))).strip()
        return text

    return read


def checked_secret(read: Callable[[], str], check: Callable[[str], str]) -> Callable[[], str]:
    """A secret reader that never hands out a placeholder: ``check`` raises ``CredentialNotSet`` instead."""

    def read_checked() -> str:
        return check(read())

    return read_checked


def secrets_provider() -> SecretsProvider:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    return SecretsProvider(boto3_client=clients.secrets_client())


class PipelineOnFirstUse(Pipeline):
    """The deployed pipeline: each part, and the AWS client under it, is built the first time it is used.

    A cold start then pays only for what its function touches (the callback never builds the HTTP
    client, the bucket or the event bus client). Parts may still be replaced, as on any pipeline.
    """

    def __init__(self, settings: Settings, **parts: Any) -> None:
        """``parts`` given (``dataclasses.replace`` gives every field) are used instead of making them."""
        self.settings = settings
        self.clock = utc_now
        self.sleep = time.sleep
        secrets = SecretsOnFirstRead(secrets_provider)
        self.api_key = checked_secret(
            secret_reader(secrets, settings.api_key_secret_id, settings.secret_max_age_seconds), require_api_key
        )
        self.webhook_secret = secret_reader(secrets, settings.webhook_secret_id, settings.secret_max_age_seconds)
        vars(self).update(parts)

    @cached_property
    def jobs(self) -> JobRepository:  # type: ignore[override]
        return JobRepository(clients.dynamodb_client(), self.settings.jobs_table, self.settings.ledger_table)

    @cached_property
    def bucket(self) -> MediaBucket:  # type: ignore[override]
        return MediaBucket(clients.s3_client(), self.settings.media_bucket)

    @cached_property
    def wavespeed(self) -> WaveSpeedClient:  # type: ignore[override]
        # httpx is imported here, not at the cold start: the callback never talks to WaveSpeed.
        import httpx

        from .outbound import OutputDownloader, tls_context
        from .wavespeed_client import WaveSpeedClient

        timeout = httpx.Timeout(self.settings.http_timeout_seconds, connect=5.0)
        # The API client never follows a redirect, so the key goes to the base URL only; no proxy from the environment.
        http = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, verify=tls_context())
        outputs = OutputDownloader.build(self.settings.output_policy, timeout)
        return WaveSpeedClient(self.settings.wavespeed_base_url, self.api_key, http, outputs=outputs)

    @cached_property
    def events(self) -> EventPublisher:  # type: ignore[override]
        from .events import EventPublisher  # its event models are built only where events are sent

        return EventPublisher(clients.events_client(), self.settings.event_bus_name)

    @cached_property
    def queues(self) -> Queues:  # type: ignore[override]
        return Queues(clients.sqs_client(), self.settings.submit_queue_url, self.settings.fetch_queue_url)


def build_pipeline(settings: Settings) -> Pipeline:
    """Builds nothing yet: every part is made on first use (``PipelineOnFirstUse``)."""
    return PipelineOnFirstUse(settings)


@cache
def get_pipeline() -> Pipeline:
    """One pipeline per cold start."""
    return build_pipeline(get_settings())
