"""From an inbox event to a WaveSpeed task: validate, measure, price, hold budget, submit once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import unquote_plus

from botocore.exceptions import BotoCoreError, ClientError

from .billing import rule_book
from .budget_alerts import check_budget_alerts
from .credentials import CredentialNotSet
from .intake import (
    MAX_LISTED_KEYS,
    OPTIONS_FILE,
    Candidate,
    Drop,
    InputProblems,
    Waiting,
    assess_folder,
    assess_manifest,
    bounded_problems,
    drop_for_key,
    error_file_name,
    inspect_inputs,
    job_id_for,
)
from .models import FailureKind, Job, JobStatus, Role, micros_to_usd, usd_text
from .observability import logger, metrics
from .pacing import wait_for_submit_slot
from .pipeline import WHAT_TO_DO, FolderCheck, Pipeline, ResumeJob, S3Notification
from .repository import BudgetExceeded, DuplicateJob, StaleTransition, TaskHeldByAnotherJob
from .sqs_batch import ExpectedRetry
from .submit_states import API_KEY_WAIT, api_key_missing, is_waiting_for_api_key, mark_uncertain, wait_for_api_key
from .wavespeed import NoTaskCreated, SubmitOutcomeUnknown, SubmitRefused, backoff_delays

# A submit answer is recorded from these: an answer that comes after the job was given up on still counts.
LATE_ANSWER_FROM = [JobStatus.SUBMITTING, JobStatus.UNCERTAIN, JobStatus.HELD]


class RetryLater(ExpectedRetry):
    """Nothing was created and nothing lost: let the queue deliver this message again later."""


def drops_in(body: dict[str, Any]) -> Iterator[Drop | ResumeJob]:
    """What one submit-queue message asks for: S3 notifications, a folder re-check, or a resume."""
    if body.get("Event") == "s3:TestEvent":
        return
    kind = body.get("kind")
    if kind == "folder_check":
        check = FolderCheck.model_validate(body)
        yield Drop(name=check.name, kind="folder", key=check.prefix, arrived_at=check.arrived_at)
    elif kind == "resume_job":
        yield ResumeJob.model_validate(body)
    elif "Records" in body:
        for record in S3Notification.model_validate(body).Records:
            if not record.eventName.startswith("ObjectCreated"):
                continue
            drop = drop_for_key(unquote_plus(record.s3.object.key))
            if drop is not None:
                yield replace(drop, arrived_at=record.eventTime) if drop.kind == "folder" else drop
    else:
        logger.warning("ignoring an unknown submit message", extra={"body": json.dumps(body)[:500]})


def process_submit_message(
    body: dict[str, Any], pipeline: Pipeline, time_left: Callable[[], float] | None = None
) -> None:
    for item in drops_in(body):
        if isinstance(item, ResumeJob):
            job = pipeline.jobs.get(item.job_id)
            if job is not None:
                advance(job, pipeline, time_left)
        else:
            start_drop(item, pipeline, time_left)


def start_drop(drop: Drop, pipeline: Pipeline, time_left: Callable[[], float] | None = None) -> None:
    candidate = assess(drop, pipeline)
    if candidate is None:
        return
    existing = pipeline.jobs.get(candidate.job_id)
    if existing is not None:
        logger.info("repeat event for an existing job", extra={"job_id": existing.job_id, "status": existing.status})
        advance(existing, pipeline, time_left)
        return
    if candidate.problems or candidate.spec is None:
        reject(candidate, candidate.problems, FailureKind.INVALID_INPUT, pipeline)
        return
    objects = {o.key: o for o in candidate.objects}
    try:
        inspected = inspect_inputs(candidate.spec, objects, pipeline.bucket)
    except InputProblems as exc:
        reject(candidate, exc.problems, FailureKind.INVALID_INPUT, pipeline)
        return

    now = pipeline.clock()
    rules = rule_book().select(pipeline.settings.billing_rule_set, now.date())
    estimate = rules.charge(
        candidate.spec.resolution,
        rules.billable_seconds(input_seconds=inspected.output_seconds, output_seconds=inspected.output_seconds),
    )
    job = Job(
        job_id=candidate.job_id,
        job_name=candidate.name,
        status=JobStatus.RECEIVED,
        status_since=now,
        created_at=now,
        spec=candidate.spec,
        drop_keys=sorted(objects),
        month=now.strftime("%Y-%m"),
        rule_set=rules.id,
        input_seconds=inspected.output_seconds,
        estimate_micros=estimate.micros,
        reserved_micros=estimate.micros,
    )
    try:
        pipeline.jobs.create_with_reservation(job, pipeline.settings.budget_micros)
    except DuplicateJob:
        existing = pipeline.jobs.get(job.job_id)
        if existing is not None:
            advance(existing, pipeline, time_left)
        return
    except BudgetExceeded:
        reject(
            candidate,
            [budget_problem(job, pipeline)],
            FailureKind.BUDGET,
            pipeline,
            estimate_micros=estimate.micros,
        )
        return
    metrics.add_metric(name="JobsAccepted", unit="Count", value=1)
    logger.info("job accepted", extra={"job_id": job.job_id, "estimate": usd_text(estimate.micros)})
    pipeline.clear_error(job.job_name)
    check_budget_alerts(job.month, job.job_id, pipeline)
    submit(job, pipeline, time_left)


def assess(drop: Drop, pipeline: Pipeline) -> Candidate | None:
    if drop.kind == "stray":
        stored = pipeline.bucket.head(drop.key)
        if stored is None:
            return None
        problem = (
            f"{drop.key} is directly in inbox/: put a job's files in a folder inbox/<name>/ "
            "(image.png, audio.mp3, ...) or drop a manifest inbox/<name>.json"
        )
        return Candidate(job_id=job_id_for(drop.name, [stored]), name=drop.name, objects=[stored], problems=[problem])
    if drop.kind == "manifest":
        return assess_manifest(drop, pipeline.bucket)
    if drop.arrived is not None and drop.arrived_at is not None:
        # Noted before any look is asked for, so an earlier file's look can leave the folder to this one's.
        pipeline.jobs.note_folder_arrival(drop.name, drop.arrived_at)
    check = FolderCheck(name=drop.name, prefix=drop.key, arrived_at=drop.arrived_at)
    if drop.cannot_be_ready_yet:
        # Look once the settle time has passed, as the listing would have said: one LIST fewer per file.
        pipeline.queues.send_submit(check, delay_seconds=pipeline.settings.folder_settle_seconds + 1)
        return None
    looked_for = drop.arrived_at if drop.arrived is None else None  # a re-check, for the file that landed then
    if looked_for is not None and pipeline.jobs.folder_arrival_after(drop.name, looked_for):
        # A file landed after the one this look is for; that file's own look (or job.json's, at once) lists
        # the folder later and sees everything this one would: one LIST per folder, not one per file.
        logger.info("folder look left to a later file's", extra={"folder": drop.key})
        return None
    objects = pipeline.bucket.list(drop.key)
    options_key = drop.key + OPTIONS_FILE
    options_raw = pipeline.bucket.read_document(options_key) if any(o.key == options_key for o in objects) else None
    now, settle_seconds = pipeline.clock(), pipeline.settings.folder_settle_seconds
    verdict = assess_folder(drop, objects, options_raw, now, settle_seconds)
    # Uploads in progress can only hold back a folder that is otherwise ready and has no job yet:
    # the listing (a LIST request, the dearest kind) is skipped while the folder waits anyway.
    if (
        isinstance(verdict, Candidate)
        and pipeline.jobs.get(verdict.job_id) is None
        and (uploading := pipeline.bucket.uploads_in_progress(drop.key))
    ):
        verdict = assess_folder(drop, objects, options_raw, now, settle_seconds, uploading)
    if isinstance(verdict, Waiting):
        pipeline.queues.send_submit(check, delay_seconds=verdict.seconds)
        return None
    return verdict


def budget_problem(job: Job, pipeline: Pipeline) -> str:
    totals, _ = pipeline.jobs.month(job.month)
    committed = next((t.charged_micros + t.reserved_micros for t in totals if t.model is None), 0)
    return (
        f"monthly budget refused this job: its estimate {usd_text(job.estimate_micros)} "
        f"({job.input_seconds} s at {job.spec.resolution.value if job.spec else '?'}) plus {usd_text(committed)} "
        f"already committed in {job.month} exceeds the budget of ${micros_to_usd(pipeline.settings.budget_micros)}"
    )


def reject(
    candidate: Candidate, problems: list[str], kind: FailureKind, pipeline: Pipeline, estimate_micros: int = 0
) -> None:
    """Refuse a drop before any money is at stake; the error file says what to change.

    Whatever a drop holds, the refusal fits in one error file and one row: problems and keys are
    bounded, and a name no S3 key can hold gets its error file under a shortened name.
    """
    now = pipeline.clock()
    problems = bounded_problems(problems)
    job = Job(
        job_id=candidate.job_id,
        job_name=candidate.name,
        status=JobStatus.REJECTED,
        status_since=now,
        created_at=now,
        spec=candidate.spec,
        drop_keys=sorted(o.key for o in candidate.objects)[:MAX_LISTED_KEYS],
        failure_kind=kind,
        error="; ".join(problems),
        estimate_micros=estimate_micros,
    )
    where = job.model_copy(update={"job_name": error_file_name(job.job_name)})
    pipeline.write_error(where, problems, WHAT_TO_DO[kind])
    try:
        pipeline.jobs.put_new(job)
    except DuplicateJob:
        return
    metrics.add_metric(name="JobsRejected", unit="Count", value=1)
    logger.info("job rejected", extra={"job_id": job.job_id, "problems": problems})
    pipeline.announce(job)


def advance(job: Job, pipeline: Pipeline, time_left: Callable[[], float] | None = None) -> None:
    """Carry a job on from wherever an interrupted run left it; a no-op for every later status."""
    if job.status is JobStatus.RECEIVED:
        submit(job, pipeline, time_left)
    elif job.status is JobStatus.SUBMITTING:
        age = (pipeline.clock() - job.status_since).total_seconds()
        if age > pipeline.settings.submit_stall_seconds:
            mark_uncertain(job, pipeline, "the submitting run stopped before recording WaveSpeed's answer")


# S3's answers that an input is no longer the one that was checked: retrying cannot bring it back.
GONE_CODES = frozenset({"404", "NoSuchKey", "412", "PreconditionFailed"})


class InputsChanged(Exception):
    """An input vanished or changed between its check and its hand-over: nothing was sent."""


def input_urls(job: Job, pipeline: Pipeline) -> dict[Role, str]:
    """URLs WaveSpeed can read: presigned GETs that outlive the queue, or its own media storage.

    Raises ``NoTaskCreated`` when the inputs cannot be handed over: nothing was sent yet.
    """
    assert job.spec is not None
    settings = pipeline.settings
    try:
        if settings.input_delivery == "presigned-url":
            return {
                role: pipeline.bucket.presign(key, settings.presign_expiry_seconds)
                for role, key in job.spec.inputs.items()
            }
        urls: dict[Role, str] = {}
        for role, key in job.spec.inputs.items():
            with pipeline.bucket.open_stream(key) as stream:
                filename = key.rsplit("/", 1)[-1]
                urls[role] = pipeline.wavespeed.upload_media(filename, stream, "application/octet-stream")
    except FileNotFoundError as exc:
        raise InputsChanged(f"{exc} any more: it was deleted after it was checked; upload it again") from exc
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in GONE_CODES:
            raise InputsChanged(f"an input was deleted or replaced after it was checked ({exc}); upload again") from exc
        raise NoTaskCreated(f"inputs could not be read from the bucket: {exc}") from exc
    except BotoCoreError as exc:
        raise NoTaskCreated(f"inputs could not be read from the bucket: {exc}") from exc
    return urls


def submit(job: Job, pipeline: Pipeline, time_left: Callable[[], float] | None = None) -> None:
    """POST the task at most once per proof that nothing was created; never twice on a lost answer.

    ``time_left`` (seconds) keeps a backoff from outliving the function: a job whose next try would
    not fit goes back to ``received`` and its message comes again, since nothing was created.
    """
    spec = job.spec
    assert spec is not None
    if api_key_missing(pipeline):
        if not is_waiting_for_api_key(job):  # a repeated event for a waiting job changes nothing
            wait_for_api_key(job, pipeline, [JobStatus.RECEIVED])
        return
    try:
        job = pipeline.jobs.transition(
            job,
            JobStatus.SUBMITTING,
            [JobStatus.RECEIVED],
            submit_attempts=job.submit_attempts + 1,
            submit_started_at=pipeline.clock(),  # a task this run makes is created after this moment
        )
    except StaleTransition:
        return
    settings = pipeline.settings
    delays = list(backoff_delays(settings.submit_attempts, settings.retry_base_seconds))
    for attempt in range(settings.submit_attempts):
        try:
            if api_key_missing(pipeline):  # replaced by a placeholder while this job was backing off
                raise CredentialNotSet(API_KEY_WAIT)
            body = spec.request_body(input_urls(job, pipeline))
            wait_for_submit_slot(pipeline, time_left)
            prediction = pipeline.wavespeed.submit(spec.model, body, pipeline.webhook_url_for(job))
            break
        except CredentialNotSet:
            wait_for_api_key(job, pipeline, [JobStatus.SUBMITTING])
            return
        except NoTaskCreated as exc:
            wait = max(delays[attempt], min(exc.retry_after or 0.0, 20.0)) if attempt < len(delays) else 0.0
            out_of_time = time_left is not None and time_left() < wait + settings.http_timeout_seconds + 5
            if attempt == len(delays) or out_of_time:
                pipeline.jobs.transition(job, JobStatus.RECEIVED, [JobStatus.SUBMITTING], error=str(exc))
                metrics.add_metric(name="SubmitDeferred", unit="Count", value=1)
                raise RetryLater(f"{job.job_id}: {exc}") from exc
            logger.info("no task created; retrying", extra={"job_id": job.job_id, "reason": str(exc), "wait": wait})
            pipeline.sleep(wait)
        except SubmitRefused as exc:
            pipeline.fail_before_task(job, FailureKind.REFUSED_BY_API, str(exc), [JobStatus.SUBMITTING])
            return
        except InputsChanged as exc:
            pipeline.fail_before_task(job, FailureKind.INVALID_INPUT, str(exc), [JobStatus.SUBMITTING])
            return
        except SubmitOutcomeUnknown as exc:
            mark_uncertain(job, pipeline, str(exc))
            return
    record_task(job, prediction.id, pipeline)


def record_task(job: Job, task_id: str, pipeline: Pipeline) -> None:
    """Remember the task WaveSpeed created, even if the job was meanwhile marked uncertain.

    Recording it also holds the task for this job, so no other job can ever be given it.
    """
    try:
        job = pipeline.jobs.record_task(job, JobStatus.SUBMITTED, LATE_ANSWER_FROM, task_id, error=None)
    except TaskHeldByAnotherJob as exc:
        metrics.add_metric(name="TaskHeldByAnotherJob", unit="Count", value=1)
        logger.error("submit answer names a task held elsewhere", extra={"job_id": job.job_id, "error": str(exc)})
        return
    except StaleTransition:
        logger.info("the task's webhook was recorded first", extra={"job_id": job.job_id, "task_id": task_id})
        return
    metrics.add_metric(name="JobsSubmitted", unit="Count", value=1)
    logger.info("job submitted", extra={"job_id": job.job_id, "task_id": task_id})
    pipeline.announce(job)
