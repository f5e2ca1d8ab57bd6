"""Fetch a finished task from WaveSpeed, store its outputs, and charge it exactly once."""

from __future__ import annotations

import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from .billing import BillingRuleSet, Charge, rule_book
from .budget_alerts import check_budget_alerts
from .media import MediaError, playing_seconds
from .models import FailureKind, Job, JobStatus, LedgerEntry, iso, micros_to_usd, usd_text
from .observability import logger, metrics
from .outbound import OutputRefused, OutputTooLarge
from .pipeline import RESULT_FILE, WHAT_TO_DO, Pipeline
from .repository import StaleTransition
from .storage import outputs_prefix
from .wavespeed import Prediction, TaskUnavailable, TemporarilyUnavailable, backoff_delays

CHUNK_BYTES = 1024 * 1024
NO_VIDEO = "WaveSpeed reported the task completed but returned no video"
NO_VIDEO_WHAT_TO_DO = (
    "WaveSpeed finished the task without a video, so there is nothing to deliver. Nothing was charged "
    "unless the ledger says so; upload again to run the job anew."
)
OUTPUT_REFUSED_WHAT_TO_DO = (
    "WaveSpeed finished the task and billed it, so the ledger charges the estimate, but its video was not "
    "downloaded: the output download policy refused it (see problems). If the host named there is WaveSpeed's "
    "own, add it to the stack's OutputHosts parameter; then upload again to run the job anew."
)
OUTPUT_TOO_LARGE_WHAT_TO_DO = (
    "WaveSpeed finished the task and billed it, so the ledger charges the estimate, but its video is larger "
    "than the stack keeps (see problems). Raise OUTPUT_MAX_BYTES or make the job shorter or 480p, then upload again."
)


class ChunkReader(io.RawIOBase):
    """A read()-able view of an iterator of byte chunks, for streaming uploads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def accepted_jobs(job_name: str, pipeline: Pipeline) -> list[Job]:
    """The name's jobs that were accepted, newest first: a rejected (or stray) drop never made outputs."""
    return [other for other in pipeline.jobs.by_name(job_name) if other.status is not JobStatus.REJECTED]


def output_folder(job: Job, pipeline: Pipeline) -> str:
    """``outputs/<name>/``, unless a newer accepted drop of the same name exists: its outputs must not be replaced.

    A refused drop does not count, so a bad upload made while a job runs does not move that job's video.
    """
    newest = accepted_jobs(job.job_name, pipeline)
    if newest and newest[0].job_id != job.job_id:
        return f"{outputs_prefix(job.job_name)}{job.job_id}/"
    return outputs_prefix(job.job_name)


def refused_since(job: Job, pipeline: Pipeline) -> bool:
    """Whether a drop of the name was refused after this job was made: its error file is still news."""
    return any(
        other.status is JobStatus.REJECTED and other.created_at > job.created_at
        for other in pipeline.jobs.by_name(job.job_name)
    )


def output_key(folder: str, index: int) -> str:
    suffix = "" if index == 0 else f"-{index + 1}"
    return f"{folder}video{suffix}.mp4"


def deliver(job_id: str, pipeline: Pipeline) -> None:
    """Safe to run any number of times: only a REPORTED job moves, and it moves once."""
    job = pipeline.jobs.get(job_id)
    if job is None:
        logger.warning("fetch for an unknown job", extra={"job_id": job_id})
        return
    if job.status in {JobStatus.DELIVERED, JobStatus.FAILED}:
        pipeline.announce(job)
        return
    if job.status is not JobStatus.REPORTED or job.task_id is None:
        return
    holder = pipeline.jobs.claim_task(job.task_id, job.job_id)
    if holder != job.job_id:
        release_task_of_another_job(job, holder, pipeline)
        return
    rules = rule_book().get(job.rule_set)
    try:
        prediction = read_result(job.task_id, pipeline)
        if not prediction.is_final:
            # A webhook ran ahead of the result endpoint; reconcile will look again.
            pipeline.jobs.transition(job, JobStatus.SUBMITTED, [JobStatus.REPORTED])
            return
        if prediction.status == "failed":
            message = f"WaveSpeed: {prediction.error or 'the task failed without a message'}"
            settle_failure(job, message, FailureKind.GENERATION_FAILED, rules, pipeline)
        elif not prediction.outputs:
            # Completed with nothing to deliver is a failed task: charged as one, never as a video.
            settle_failure(job, NO_VIDEO, FailureKind.GENERATION_FAILED, rules, pipeline, NO_VIDEO_WHAT_TO_DO)
        else:
            settle_delivery(job, prediction, rules, pipeline)
    except OutputRefused as exc:
        # Our policy, not WaveSpeed, said no; asking again gets the same URL. WaveSpeed billed the task.
        advice = OUTPUT_TOO_LARGE_WHAT_TO_DO if isinstance(exc, OutputTooLarge) else OUTPUT_REFUSED_WHAT_TO_DO
        settle_failure(job, str(exc), FailureKind.DELIVERY_FAILED, rules, pipeline, advice)
    except TaskUnavailable as exc:
        # Retrying cannot help, and WaveSpeed billed the finished task: end it with its estimate charged.
        settle_failure(job, f"WaveSpeed: {exc}", FailureKind.DELIVERY_FAILED, rules, pipeline)
    check_budget_alerts(job.month, job.job_id, pipeline)


def read_result(task_id: str, pipeline: Pipeline) -> Prediction:
    """The result endpoint, asked again within this run while it fails in a passing way (5xx, 429, network).

    A fetch message that fails waits out its queue's visibility timeout (90 minutes) before it is
    tried again, and five failures send it to the dead-letter queue; a brief outage should cost neither.
    """
    settings = pipeline.settings
    for delay in [*backoff_delays(settings.result_attempts, settings.retry_base_seconds), None]:
        try:
            return pipeline.wavespeed.result(task_id)
        except TemporarilyUnavailable as exc:
            if delay is None:
                raise
            logger.info("result unreadable; asking again", extra={"task_id": task_id, "error": str(exc)})
            pipeline.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the last attempt returns or raises


def release_task_of_another_job(job: Job, holder: str, pipeline: Pipeline) -> None:
    """A task already held by another job is never charged twice nor fetched again for this one.

    This job is not charged, its budget hold is released and it forgets the task, ending as
    ``submit_unknown``: its error file says why, and a webhook for a task of its own still delivers it.
    """
    error = (
        f"WaveSpeed task {job.task_id} was reported for this job, but that task belongs to job "
        f"{holder or '(unknown)'} and is charged there; this job was not charged and nothing was fetched for it"
    )
    changes: dict[str, Any] = {
        "failure_kind": FailureKind.SUBMIT_UNKNOWN,
        "error": error,
        "reserved_micros": 0,
        "task_id": None,
    }
    try:
        pipeline.jobs.settle(job, JobStatus.FAILED, [JobStatus.REPORTED], None, None, **changes)
    except StaleTransition:
        return
    metrics.add_metric(name="TaskAlreadyCharged", unit="Count", value=1)
    logger.error("task held by another job", extra={"job_id": job.job_id, "task_id": job.task_id, "holder": holder})
    failed = job.model_copy(update={"status": JobStatus.FAILED, **changes})
    pipeline.write_error(failed, [error], WHAT_TO_DO[FailureKind.SUBMIT_UNKNOWN])
    pipeline.announce(failed)


def store_outputs(folder: str, prediction: Prediction, pipeline: Pipeline) -> list[str]:
    """Stream every output into the bucket; an output refused for good takes the ones before it away too.

    An output cut off mid-way (over the byte cap, or a broken connection) never appears: the
    multipart upload is aborted, since the stream raises before the upload completes.
    """
    keys: list[str] = []
    try:
        for index, url in enumerate(prediction.outputs):
            key = output_key(folder, index)
            with pipeline.wavespeed.stream_output(url) as output:
                stream = io.BufferedReader(ChunkReader(output.iter_bytes(CHUNK_BYTES)), buffer_size=CHUNK_BYTES)
                pipeline.bucket.upload_stream(key, stream, video_content_type(output.headers.get("content-type")))
            keys.append(key)
    except (OutputRefused, TaskUnavailable):
        for key in keys:
            pipeline.bucket.delete(key)
        raise
    return keys


def video_content_type(declared: str | None) -> str:
    """The stored object's type: a video type the output host declared, else MP4 (never, say, text/html)."""
    value = (declared or "").split(";", 1)[0].strip().lower()
    if value.startswith("video/") and value[len("video/") :].replace("-", "").replace(".", "").isalnum():
        return value
    return "video/mp4"


def measure_video(key: str, pipeline: Pipeline) -> Decimal | None:
    stored = pipeline.bucket.head(key)
    if stored is None:
        return None
    try:
        with pipeline.bucket.open(stored) as stream:
            return playing_seconds(stream, stored.filename)
    except MediaError as exc:
        logger.warning("could not measure the output; billing the estimate", extra={"key": key, "error": str(exc)})
        return None


def ledger_entry(
    job: Job, outcome: str, charge: Charge, output_seconds: Decimal | None, pipeline: Pipeline
) -> LedgerEntry:
    assert job.spec is not None
    assert job.task_id is not None
    return LedgerEntry.model_validate(
        {
            "job_id": job.job_id,
            "job_name": job.job_name,
            "month": job.month,
            "model": job.spec.model,
            "resolution": job.spec.resolution,
            "outcome": outcome,
            "rule_set": charge.rule_set,
            "input_seconds": job.input_seconds or Decimal(0),
            "output_seconds": output_seconds,
            "billed_seconds": charge.billed_seconds,
            "rate_micros_per_second": charge.rate_micros_per_second,
            "estimate_micros": job.estimate_micros,
            "charged_micros": charge.micros,
            "task_id": job.task_id,
            "recorded_at": pipeline.clock(),
        }
    )


def settle_delivery(job: Job, prediction: Prediction, rules: BillingRuleSet, pipeline: Pipeline) -> None:
    assert job.spec is not None
    folder = output_folder(job, pipeline)
    keys = store_outputs(folder, prediction, pipeline)
    measured = measure_video(keys[0], pipeline) if keys else None
    input_seconds = job.input_seconds or Decimal(0)
    charge = rules.charge(
        job.spec.resolution, rules.billable_seconds(input_seconds=input_seconds, output_seconds=measured)
    )
    entry = ledger_entry(job, "delivered", charge, measured, pipeline)
    changes: dict[str, Any] = {
        "output_keys": keys,
        "output_seconds": measured,
        "billed_seconds": charge.billed_seconds,
        "charged_micros": charge.micros,
        "nsfw_flags": prediction.has_nsfw_contents,
        "inference_ms": prediction.timings.get("inference"),
        "reserved_micros": 0,
        "error": None,
    }
    delivered = job.model_copy(update={"status": JobStatus.DELIVERED, **changes})
    pipeline.bucket.put_json(folder + RESULT_FILE, result_document(delivered, entry, prediction))
    try:
        pipeline.jobs.settle(job, JobStatus.DELIVERED, [JobStatus.REPORTED], entry, charge, **changes)
    except StaleTransition:
        logger.info("delivery settled by another run", extra={"job_id": job.job_id})
        return
    if folder == outputs_prefix(job.job_name) and not refused_since(job, pipeline):
        # A late webhook can deliver a job first settled as unknown: its error file is now wrong.
        pipeline.clear_error(job.job_name)
    metrics.add_metric(name="JobsDelivered", unit="Count", value=1)
    metrics.add_metric(name="ChargedMicroDollars", unit="Count", value=charge.micros)
    logger.info("job delivered", extra={"job_id": job.job_id, "charge": usd_text(charge.micros), "keys": keys})
    pipeline.announce(delivered)


def settle_failure(
    job: Job,
    message: str,
    kind: FailureKind,
    rules: BillingRuleSet,
    pipeline: Pipeline,
    what_to_do: str | None = None,
) -> None:
    """A finished task with no video: the ledger line charges what the rule set says such a task costs."""
    assert job.spec is not None
    billable = rules.billable_seconds(input_seconds=job.input_seconds or Decimal(0), output_seconds=None)
    charge = rules.charge(job.spec.resolution, billable)
    if kind is FailureKind.GENERATION_FAILED and not rules.charge_failed_jobs:
        charge = Charge(
            rule_set=rules.id,
            billed_seconds=0,
            rate_micros_per_second=charge.rate_micros_per_second,
            micros=0,
        )
    entry = ledger_entry(job, "failed", charge, None, pipeline)
    changes: dict[str, Any] = {
        "failure_kind": kind,
        "error": message,
        "charged_micros": charge.micros,
        "billed_seconds": charge.billed_seconds,
        "reserved_micros": 0,
    }
    failed = job.model_copy(update={"status": JobStatus.FAILED, **changes})
    try:
        pipeline.jobs.settle(job, JobStatus.FAILED, [JobStatus.REPORTED], entry, charge, **changes)
    except StaleTransition:
        return
    pipeline.write_error(failed, [message], what_to_do or WHAT_TO_DO[kind])
    metrics.add_metric(name="JobsFailed", unit="Count", value=1)
    pipeline.announce(failed)


def result_document(job: Job, entry: LedgerEntry, prediction: Prediction) -> dict[str, Any]:
    assert job.spec is not None
    return {
        "job_id": job.job_id,
        "job_name": job.job_name,
        "task_id": job.task_id,
        "model": job.spec.model.value,
        "options": {
            "prompt": job.spec.prompt,
            "resolution": job.spec.resolution.value,
            "seed": job.spec.seed,
            "order": job.spec.order.value if job.spec.order else None,
        },
        "inputs": {role.value: key for role, key in sorted(job.spec.inputs.items())},
        "outputs": job.output_keys,
        "timings": {
            "created_at": iso(job.created_at),
            "wavespeed_created_at": iso(prediction.created_at) if prediction.created_at else None,
            "inference_ms": prediction.timings.get("inference"),
            "delivered_at": iso(entry.recorded_at),
        },
        "input_seconds": str(job.input_seconds),
        "output_seconds": str(entry.output_seconds) if entry.output_seconds is not None else None,
        "billed_seconds": entry.billed_seconds,
        "rate_usd_per_second": str(micros_to_usd(entry.rate_micros_per_second)),
        "price_usd": usd_text(entry.charged_micros),
        "estimate_usd": usd_text(entry.estimate_micros),
        "rule_set": entry.rule_set,
        "nsfw_flags": prediction.has_nsfw_contents,
    }
