"""Paths where WaveSpeed or time runs out on us: expired results, slow answers, superseded drops."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from infinitetalk_core.models import FailureKind, Job, JobSpec, JobStatus, ModelName, Role
from infinitetalk_core.pipeline import get_pipeline
from infinitetalk_core.submission import RetryLater, submit
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.integration.conftest import start_stack, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack({"WEBHOOK_OVERDUE_SECONDS": "2"}) as running:
        yield running


def test_a_finished_task_whose_result_expired_is_settled_once_with_its_estimate(stack: LocalStack) -> None:
    stack.standin.faults.drop_webhook_next = 1
    stack.drop_folder("expired", {"image.png": portrait_png(), "audio.wav": voice_wav(6.5)}, {})
    submitted = stack.wait_for("expired", statuses={"submitted"}, timeout=30)
    task_id = submitted.task_id or ""
    wait_until(lambda: stack.standin.tasks[task_id].status == "completed")
    stack.standin.expire(task_id)

    job = stack.wait_for("expired", timeout=60)
    assert job.status is JobStatus.FAILED and job.failure_kind is FailureKind.DELIVERY_FAILED
    _, entries = stack.jobs.month(job.month)
    (line,) = [e for e in entries if e.job_id == job.job_id]
    assert line.outcome == "failed" and line.charged_micros == job.estimate_micros == 7 * 30_000
    error = stack.read_json("outputs/expired/error.json")
    assert "404" in error["problems"][0] and "billed the task" in error["what_to_do"]
    totals, _ = stack.jobs.month(job.month)
    assert next(t for t in totals if t.model is None).reserved_micros >= 0


def test_an_older_drop_finishing_last_does_not_replace_the_newer_ones_video(stack: LocalStack) -> None:
    stack.standin.faults.webhook_delay_seconds = 4.0
    stack.drop_folder("rerun", {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)}, {})
    older = stack.wait_for("rerun", statuses={"submitted"}, timeout=30)
    stack.standin.faults.webhook_delay_seconds = 0.0
    stack.standin.faults.drop_webhook_next = 0
    stack.drop_folder("rerun", {"image.png": portrait_png(), "audio.wav": voice_wav(2.0)}, {})
    newer = stack.wait_for("rerun", statuses={"delivered"}, timeout=30)
    assert newer.job_id != older.job_id

    wait_until(lambda: (stack.jobs.get(older.job_id) or older).status is JobStatus.DELIVERED, timeout=60)
    assert stack.read_json("outputs/rerun/result.json")["job_id"] == newer.job_id
    assert stack.read_json(f"outputs/rerun/{older.job_id}/result.json")["job_id"] == older.job_id
    assert f"outputs/rerun/{older.job_id}/video.mp4" in stack.output_keys("rerun")


def test_a_rate_limited_submit_that_would_outlive_the_function_goes_back_to_wait(stack: LocalStack) -> None:
    stack.put("library/late/image.png", portrait_png())
    stack.put("library/late/audio.wav", voice_wav(1.0))
    now = time.time()
    job = Job.model_validate(
        {
            "job_id": f"late-{int(now)}",
            "job_name": "late",
            "status": JobStatus.RECEIVED,
            "status_since": now,
            "created_at": now,
            "spec": JobSpec(
                name="late",
                model=ModelName.SINGLE,
                inputs={Role.IMAGE: "library/late/image.png", Role.AUDIO: "library/late/audio.wav"},
            ),
            "month": time.strftime("%Y-%m", time.gmtime(now)),
            "rule_set": "seeds-output-5s",
            "input_seconds": Decimal(1),
            "estimate_micros": 150_000,
            "reserved_micros": 150_000,
        }
    )
    pipeline = get_pipeline()
    pipeline.jobs.create_with_reservation(job, budget_micros=0)
    submits_before = stack.standin.submit_count
    stack.standin.faults.submit_429_next = 1

    with pytest.raises(RetryLater):
        submit(job, pipeline, time_left=lambda: 2.0)
    waiting = stack.jobs.get(job.job_id)
    assert waiting is not None and waiting.status is JobStatus.RECEIVED and "429" in (waiting.error or "")
    assert stack.standin.submit_count == submits_before

    submit(waiting, pipeline, time_left=lambda: 100.0)
    delivered = stack.wait_for("late", timeout=60)
    assert delivered.status is JobStatus.DELIVERED and delivered.submit_attempts == 2
    assert stack.standin.submit_count == submits_before + 1


def test_a_message_that_always_fails_lands_in_the_dead_letter_queue_after_the_templates_count(
    stack: LocalStack,
) -> None:
    redrive = stack.template.resources["FetchQueue"]["Properties"]["RedrivePolicy"]
    stack.sqs.send_message(QueueUrl=stack.resource("FetchQueue"), MessageBody="not a fetch request")
    wait_until(lambda: stack.dead_letters()["FetchDeadLetterQueue"] == 1, timeout=60)
    (message,) = stack.sqs.receive_message(
        QueueUrl=stack.resource("FetchDeadLetterQueue"), AttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    assert message["Body"] == "not a fetch request"
    assert int(message["Attributes"]["ApproximateReceiveCount"]) >= int(redrive["maxReceiveCount"])
