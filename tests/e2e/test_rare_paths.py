"""Paths a deployment walks rarely, walked end to end so their calls are recorded too.

An output over the byte cap (its multipart upload aborted), a job whose submit message was lost
(reconcile sends it back to submit), a submission whose answer was lost and which made no task
(reconcile finds none in WaveSpeed's history and submits again), and a result that stays
unreadable (reconcile ends the job). The least-privilege check then sees what these paths need.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from infinitetalk_core.models import FailureKind, Job, JobSpec, JobStatus, ModelName, Role
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.e2e.helpers import expected_charge, ledger_lines, snapshot
from tests.integration.conftest import start_stack
from wavespeed_standin.webhooks import sign_message

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
OUTPUT_CAP = 9 * MIB  # above the first 8 MiB part, so an oversized output starts a multipart upload
GRACE_SECONDS = 60  # the local stack's SubmitGraceSeconds


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    environment = {
        "OUTPUT_MAX_BYTES": str(OUTPUT_CAP),
        "WEBHOOK_OVERDUE_SECONDS": "2",
        "RESULT_UNREADABLE_LIMIT_SECONDS": "2",
        "FETCH_GIVE_UP_SECONDS": "60",
    }
    with start_stack(environment) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults_left_behind(stack: LocalStack) -> Iterator[None]:
    yield
    stack.standin.reset_faults()


def stored_job(stack: LocalStack, name: str, status: JobStatus, age_seconds: float, task_id: str | None = None) -> Job:
    """A job row as a run that stopped half-way leaves it: inputs in place, its estimate held."""
    stack.put(f"library/{name}/image.png", portrait_png())
    stack.put(f"library/{name}/audio.wav", voice_wav(1.0))
    since = time.time() - age_seconds
    job = Job.model_validate(
        {
            "job_id": f"{name}-{int(since)}",
            "job_name": name,
            "status": status,
            "status_since": since,
            "created_at": since,
            "spec": JobSpec(
                name=name,
                model=ModelName.SINGLE,
                inputs={Role.IMAGE: f"library/{name}/image.png", Role.AUDIO: f"library/{name}/audio.wav"},
            ),
            "month": time.strftime("%Y-%m", time.gmtime(since)),
            "rule_set": "seeds-output-5s",
            "input_seconds": Decimal(1),
            "estimate_micros": expected_charge(1.0, "480p"),
            "reserved_micros": expected_charge(1.0, "480p"),
            "error": "the run stopped here" if status is JobStatus.UNCERTAIN else None,
            "task_id": task_id,
        }
    )
    stack.jobs.create_with_reservation(job, budget_micros=0)
    return job


def test_an_output_over_the_byte_cap_is_aborted_mid_upload_and_leaves_nothing_half_written(
    stack: LocalStack,
) -> None:
    stack.standin.faults.output_padding_bytes = 12 * MIB
    stack.drop_folder("oversized", {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)}, {})
    inputs = snapshot(stack, "inbox/oversized/")

    job = stack.wait_for("oversized", timeout=60)

    assert job.status is JobStatus.FAILED and job.failure_kind is FailureKind.DELIVERY_FAILED, job.error
    assert stack.output_keys("oversized") == ["outputs/oversized/error.json"]
    uploads = stack.s3.list_multipart_uploads(Bucket=stack.bucket, Prefix="outputs/").get("Uploads", [])
    assert uploads == [], "the aborted upload must not be left in progress"
    assert "OUTPUT_MAX_BYTES" in stack.read_json("outputs/oversized/error.json")["problems"][0]
    assert snapshot(stack, "inbox/oversized/") == inputs


def test_a_job_whose_submit_message_was_lost_is_sent_back_to_submit_and_delivered(stack: LocalStack) -> None:
    submits_before = stack.standin.submit_count
    job = stored_job(stack, "message-lost", JobStatus.RECEIVED, age_seconds=120)

    delivered = stack.wait_for("message-lost", statuses={"delivered"}, timeout=60)

    assert delivered.job_id == job.job_id and delivered.submit_attempts == 1
    assert stack.standin.submit_count == submits_before + 1
    (line,) = ledger_lines(stack, delivered)
    assert line.charged_micros == delivered.charged_micros and delivered.reserved_micros == 0


def test_a_lost_submit_answer_whose_task_never_existed_is_submitted_again_and_charged_once(
    stack: LocalStack,
) -> None:
    submits_before = stack.standin.submit_count
    job = stored_job(stack, "answer-lost", JobStatus.UNCERTAIN, age_seconds=2 * GRACE_SECONDS)

    delivered = stack.wait_for("answer-lost", statuses={"delivered"}, timeout=60)

    assert delivered.job_id == job.job_id and delivered.reserved_micros == 0
    assert stack.standin.submit_count == submits_before + 1, "sent again once: WaveSpeed's history had no task"
    (line,) = ledger_lines(stack, delivered)
    assert line.charged_micros == delivered.charged_micros


def test_a_result_that_stays_unreadable_ends_the_job_with_the_estimate_kept_as_possibly_owed(
    stack: LocalStack,
) -> None:
    stack.standin.faults.drop_webhook_next = 1
    stack.standin.faults.result_500_rate = 1.0
    submits_before = stack.standin.submit_count
    stack.drop_folder("unreadable", {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)}, {})
    inputs = snapshot(stack, "inbox/unreadable/")

    job = stack.wait_for("unreadable", timeout=60)

    assert job.status is JobStatus.FAILED and job.failure_kind is FailureKind.RESULT_UNREADABLE, job.error
    assert job.reserved_micros == job.estimate_micros == expected_charge(1.0, "480p")
    error = stack.read_json("outputs/unreadable/error.json")
    assert error["failure_kind"] == "result_unreadable" and error["possibly_owed_usd"]
    assert stack.standin.submit_count == submits_before + 1
    assert snapshot(stack, "inbox/unreadable/") == inputs


def test_a_reported_job_whose_fetch_never_succeeds_ends_with_the_estimate_kept_as_possibly_owed(
    stack: LocalStack,
) -> None:
    stack.standin.faults.result_500_rate = 1.0
    job = stored_job(stack, "never-fetched", JobStatus.REPORTED, age_seconds=120, task_id="ab" * 16)

    ended = stack.wait_for("never-fetched", timeout=60)

    assert ended.job_id == job.job_id
    assert ended.status is JobStatus.FAILED and ended.failure_kind is FailureKind.RESULT_UNREADABLE, ended.error
    assert ended.reserved_micros == job.reserved_micros, "the estimate stays held: WaveSpeed billed the task"
    error = stack.read_json("outputs/never-fetched/error.json")
    assert "could not be fetched" in error["problems"][0] and error["possibly_owed_usd"]
    assert ledger_lines(stack, ended) == []


def test_a_late_webhook_for_a_job_ended_as_unreadable_delivers_it_and_charges_it_once(stack: LocalStack) -> None:
    stack.standin.faults.drop_webhook_next = 1
    stack.standin.faults.result_500_rate = 1.0
    stack.drop_folder("late-report", {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)}, {})
    ended = stack.wait_for("late-report", timeout=60)
    assert ended.failure_kind is FailureKind.RESULT_UNREADABLE and ended.task_id is not None, ended.error
    stack.standin.reset_faults()

    task = stack.standin.tasks[ended.task_id]
    message = sign_message(task.webhook_payload(), stack.standin.webhook_secret, forged=False)
    url = f"{stack.webhook_url}?job={ended.job_id}&token={ended.webhook_token}"
    answer = httpx.post(url, content=message.body, headers=message.headers, timeout=10)
    assert answer.status_code == 200, answer.text

    delivered = stack.wait_for("late-report", statuses={"delivered"}, timeout=60)
    assert delivered.job_id == ended.job_id and delivered.reserved_micros == 0
    (line,) = ledger_lines(stack, delivered)
    assert line.charged_micros == delivered.charged_micros == expected_charge(5.0, "480p")
    assert "outputs/late-report/error.json" not in stack.output_keys("late-report")
