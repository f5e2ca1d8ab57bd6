"""Fetch a finished task from WaveSpeed, store its outputs, and charge it exactly once."""

from __future__ import annotations

import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from .billing import BillingRuleSet, Charge, rule_book
from .media import MediaError, playing_seconds
from .models import FailureKind, Job, JobStatus, LedgerEntry, iso, micros_to_usd, usd_text
from .observability import logger, metrics
from .pipeline import RESULT_FILE, WHAT_TO_DO, Pipeline
from .repository import StaleTransition
from .storage import outputs_prefix
from .wavespeed import Prediction, TaskUnavailable


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


def output_folder(job: Job, pipeline: Pipeline) -> str:
    """``outputs/<name>/``, unless a newer drop of the same name exists: its outputs must not be replaced."""
    newest = pipeline.jobs.by_name(job.job_name)
    if newest and newest[0].job_id != job.job_id:
        return f"{outputs_prefix(job.job_name)}{job.job_id}/"
    return outputs_prefix(job.job_name)


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
    rules = rule_book().get(job.rule_set)
    try:
        prediction = pipeline.wavespeed.result(job.task_id)
        if not prediction.is_final:
            # A webhook ran ahead of the result endpoint; reconcile will look again.
            pipeline.jobs.transition(job, JobStatus.SUBMITTED, [JobStatus.REPORTED])
            return
        if prediction.status == "failed":
            settle_failure(job, prediction.error, FailureKind.GENERATION_FAILED, rules, pipeline)
        else:
            settle_delivery(job, prediction, rules, pipeline)
    except TaskUnavailable as exc:
        # Retrying cannot help, and WaveSpeed billed the finished task: end it with its estimate charged.
        settle_failure(job, str(exc), FailureKind.DELIVERY_FAILED, rules, pipeline)


def store_outputs(folder: str, prediction: Prediction, pipeline: Pipeline) -> list[str]:
    keys: list[str] = []
    for index, url in enumerate(prediction.outputs):
        key = output_key(folder, index)
        with pipeline.wavespeed.stream_output(url) as response:
            stream = io.BufferedReader(ChunkReader(response.iter_bytes(1024 * 1024)), buffer_size=1024 * 1024)
            pipeline.bucket.upload_stream(key, stream, response.headers.get("content-type", "video/mp4"))
        keys.append(key)
    return keys


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
    if folder == outputs_prefix(job.job_name):
        # A late webhook can deliver a job first settled as unknown: its error file is now wrong.
        pipeline.clear_error(job.job_name)
    metrics.add_metric(name="JobsDelivered", unit="Count", value=1)
    metrics.add_metric(name="ChargedMicroDollars", unit="Count", value=charge.micros)
    logger.info("job delivered", extra={"job_id": job.job_id, "charge": usd_text(charge.micros), "keys": keys})
    pipeline.announce(delivered)


def settle_failure(job: Job, error: str | None, kind: FailureKind, rules: BillingRuleSet, pipeline: Pipeline) -> None:
    """A finished task with no video: the ledger line charges what the rule set says such a task costs."""
    assert job.spec is not None
    message = f"WaveSpeed: {error or 'the task failed without a message'}"
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
    pipeline.write_error(failed, [message], WHAT_TO_DO[kind])
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
