"""The paths a job can take, over real HTTP: moto's server for AWS, the stand-in for WaveSpeed.

Each test drops files into the bucket and lets the template's functions carry the job; faults
on the stand-in make the rare paths happen on demand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from mypy_boto3_s3 import S3Client

from infinitetalk_core.models import FailureKind, Job, JobStatus
from infinitetalk_core.repository import TOTAL_ALL, StaleTransition
from local_stack import LocalStack
from local_stack.calls import CallRecorder
from local_stack.samples import portrait_png, voice_wav
from tests.integration.conftest import start_stack, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack(
        {"MONTHLY_BUDGET_USD": "5", "SUBMIT_GRACE_SECONDS": "3", "WEBHOOK_OVERDUE_SECONDS": "2"}
    ) as running:
        yield running


def drop_folder(s3: S3Client, bucket: str, name: str, seconds: float, options: dict[str, object] | None = None) -> None:
    image, audio = portrait_png(), voice_wav(seconds)  # made first: the uploads follow each other at once
    s3.put_object(Bucket=bucket, Key=f"inbox/{name}/image.png", Body=image)
    s3.put_object(Bucket=bucket, Key=f"inbox/{name}/audio.wav", Body=audio)
    s3.put_object(Bucket=bucket, Key=f"inbox/{name}/job.json", Body=json.dumps(options or {}).encode())


def ledger_entries(stack: LocalStack, job: Job) -> list[object]:
    _, entries = stack.jobs.month(job.month)
    return [e for e in entries if e.job_id == job.job_id]


def test_an_answer_lost_after_the_task_was_created_still_delivers_once(stack: LocalStack) -> None:
    before = stack.standin.submit_count
    stack.standin.faults.submit_500_after_create_next = 1
    drop_folder(stack.s3, stack.bucket, "lost-answer", 1.5)
    job = stack.wait_for("lost-answer", timeout=60)
    assert job.status is JobStatus.DELIVERED
    assert stack.standin.submit_count == before + 1, "a lost answer must never cause a second paid task"
    assert len(ledger_entries(stack, job)) == 1


def test_an_unknown_submission_is_found_in_the_history_and_its_late_webhook_changes_nothing(
    stack: LocalStack,
) -> None:
    stack.standin.faults.submit_500_after_create_next = 1
    stack.standin.faults.webhook_delay_seconds = 8.0
    stack.standin.faults.drop_webhook_rate = 0.0
    try:
        drop_folder(stack.s3, stack.bucket, "late-webhook", 1.0)
        delivered = stack.wait_for("late-webhook", statuses={"delivered"}, timeout=30)
        # Found through the prediction history before its webhook came: never settled as failed.
        assert not [d for d in stack.standin.webhook_deliveries if d.task_id == delivered.task_id]
        wait_until(lambda: [d for d in stack.standin.webhook_deliveries if d.task_id == delivered.task_id] != [])
    finally:
        stack.standin.faults.webhook_delay_seconds = 0.0
    assert len(ledger_entries(stack, delivered)) == 1
    keys = stack.output_keys("late-webhook")
    assert keys == ["outputs/late-webhook/result.json", "outputs/late-webhook/video.mp4"], "no error file"
    after = stack.jobs.get(delivered.job_id)
    assert after is not None and after.status is JobStatus.DELIVERED
    assert after.charged_micros == delivered.charged_micros
    totals, _ = stack.jobs.month(delivered.month)
    overall = next(t for t in totals if t.model is None)
    assert overall.reserved_micros >= 0


def test_a_failed_generation_is_recorded_without_charge_and_explained(stack: LocalStack) -> None:
    stack.standin.faults.fail_next = 1
    stack.standin.faults.fail_error = "Inference failed: no face detected in image"
    drop_folder(stack.s3, stack.bucket, "no-face", 1.0)
    job = stack.wait_for("no-face", timeout=60)
    assert job.status is JobStatus.FAILED and job.failure_kind is FailureKind.GENERATION_FAILED
    error = json.loads(stack.s3.get_object(Bucket=stack.bucket, Key="outputs/no-face/error.json")["Body"].read())
    assert any("no face detected" in problem for problem in error["problems"])
    entries = ledger_entries(stack, job)
    assert len(entries) == 1
    assert entries[0].outcome == "failed" and entries[0].charged_micros == 0  # type: ignore[attr-defined]
    assert stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="outputs/no-face/video").get("KeyCount") == 0


def test_a_job_over_the_monthly_budget_is_refused_before_any_money_is_spent(stack: LocalStack) -> None:
    before = stack.standin.submit_count
    drop_folder(stack.s3, stack.bucket, "too-dear", 200.0, {"resolution": "720p"})  # $12 > $5 budget
    job = stack.wait_for("too-dear", timeout=60)
    assert job.status is JobStatus.REJECTED and job.failure_kind is FailureKind.BUDGET
    error = json.loads(stack.s3.get_object(Bucket=stack.bucket, Key="outputs/too-dear/error.json")["Body"].read())
    assert "monthly budget" in error["problems"][0] and "$12.00" in error["problems"][0]
    assert stack.standin.submit_count == before


def test_rate_limits_are_retried_and_cost_one_task(stack: LocalStack) -> None:
    before = stack.standin.submit_count
    stack.standin.faults.submit_429_next = 2
    drop_folder(stack.s3, stack.bucket, "busy", 1.0)
    job = stack.wait_for("busy", timeout=60)
    assert job.status is JobStatus.DELIVERED
    assert stack.standin.submit_count == before + 1
    assert job.submit_attempts == 1


def test_the_ledger_holds_one_line_per_job_and_totals_that_add_up(stack: LocalStack) -> None:
    drop_folder(stack.s3, stack.bucket, "sum-a", 1.2)
    drop_folder(stack.s3, stack.bucket, "sum-b", 6.3, {"resolution": "720p"})
    a = stack.wait_for("sum-a", timeout=60)
    b = stack.wait_for("sum-b", timeout=60)
    assert (a.charged_micros, b.charged_micros) == (150_000, 420_000)
    totals, entries = stack.jobs.month(a.month)
    overall = next(t for t in totals if t.model is None)
    assert overall.charged_micros == sum(e.charged_micros for e in entries)
    per_model = [t for t in totals if t.model is not None]
    assert sum(t.charged_micros for t in per_model) == overall.charged_micros
    assert b.output_seconds is not None and abs(b.output_seconds - Decimal("6.3")) < Decimal("0.1")
    stored = stack.jobs._client.get_item(  # the raw total row, as an integration would read it
        TableName=stack.ledger_table, Key={"pk": {"S": f"MONTH#{a.month}"}, "sk": {"S": TOTAL_ALL}}
    )["Item"]
    assert int(stored["committed_micros"]["N"]) == overall.charged_micros + overall.reserved_micros


def test_the_row_keeps_when_each_stage_was_first_reached_in_order(stack: LocalStack) -> None:
    drop_folder(stack.s3, stack.bucket, "timed", 1.0)
    job = stack.wait_for("timed", timeout=60)
    assert job.status is JobStatus.DELIVERED
    assert job.submitted_at is not None and job.reported_at is not None and job.delivered_at is not None
    assert job.created_at <= job.submitted_at <= job.reported_at <= job.delivered_at
    assert job.failed_at is None

    stack.standin.faults.fail_next = 1
    drop_folder(stack.s3, stack.bucket, "timed-failure", 1.0)
    failed = stack.wait_for("timed-failure", timeout=60)
    assert failed.status is JobStatus.FAILED and failed.delivered_at is None
    assert failed.submitted_at is not None and failed.failed_at is not None
    assert failed.submitted_at <= failed.failed_at


def test_marking_the_event_sent_moves_neither_the_status_nor_its_time(stack: LocalStack) -> None:
    drop_folder(stack.s3, stack.bucket, "marked", 1.0)
    job = stack.wait_for("marked", timeout=60)
    assert job.status is JobStatus.DELIVERED and job.event_published
    # The row reached delivered once; the event's mark came after it and kept the status's time.
    assert job.status_since == job.delivered_at

    row_before = stack.aws.dynamodb.get_item(TableName=stack.jobs_table, Key={"pk": {"S": f"JOB#{job.job_id}"}})
    with pytest.raises(StaleTransition):
        stack.jobs.mark_published(job.model_copy(update={"status": JobStatus.REPORTED}))  # it has moved on
    row_after = stack.aws.dynamodb.get_item(TableName=stack.jobs_table, Key={"pk": {"S": f"JOB#{job.job_id}"}})
    assert row_after["Item"] == row_before["Item"]


def test_a_folder_is_listed_once_however_many_files_announced_it(stack: LocalStack) -> None:
    """Each file's event asks for a look after the settle time; only the last file's look lists."""
    with CallRecorder() as recorder:
        stack.s3.put_object(Bucket=stack.bucket, Key="inbox/counted/image.png", Body=portrait_png())
        stack.s3.put_object(Bucket=stack.bucket, Key="inbox/counted/audio.wav", Body=voice_wav(1.0))
        job = stack.wait_for("counted", timeout=60)  # no job.json: the settle time decides
        time.sleep(5)  # every look the files asked for (3 s settle + 1) has come back by now
    assert job.status is JobStatus.DELIVERED
    listings = [
        c for c in recorder.calls if c.operation == "ListObjectsV2" and c.target.get("Prefix") == "inbox/counted/"
    ]
    assert len(listings) == 1
    assert stack.jobs.by_name("counted") == [job]

    with CallRecorder() as recorder:
        drop_folder(stack.s3, stack.bucket, "counted-with-options", 1.0)  # image, audio, then job.json
        job = stack.wait_for("counted-with-options", timeout=60)
        time.sleep(5)
    assert job.status is JobStatus.DELIVERED
    prefix = "inbox/counted-with-options/"
    # job.json's own look lists the folder and, as it is ready with no job yet, its unfinished uploads.
    listed = [c.operation for c in recorder.calls if c.target.get("Prefix") == prefix]
    assert listed == ["ListObjectsV2", "ListMultipartUploads"]
