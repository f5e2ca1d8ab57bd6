"""Every sample event in ``events/`` drives its function in the local stack as ``sam local invoke -e`` would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infinitetalk_core.models import JobStatus
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.integration.conftest import start_stack

pytestmark = pytest.mark.integration
EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack(parameters={"ReconcileSchedule": "rate(1 day)"}) as running:
        yield running


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def test_every_trigger_of_the_template_has_a_sample_event(stack: LocalStack) -> None:
    names = {path.name for path in EVENTS.glob("*.json")}
    assert len(names) == len(stack.functions) == 4
    for function in stack.functions:
        assert any(name.startswith(function) for name in names), f"no sample event for {function}"


def test_the_submit_sample_event_starts_the_job_it_names(stack: LocalStack) -> None:
    event = sample("submit-s3-notification.json")
    key = json.loads(event["Records"][0]["body"])["Records"][0]["s3"]["object"]["key"]
    assert key == "inbox/sample-talk/job.json"
    # The named drop exists, but no notification reached the queue: only the sample event can start it.
    stack.s3.put_bucket_notification_configuration(Bucket=stack.bucket, NotificationConfiguration={})
    stack.drop_folder("sample-talk", {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)}, {"seed": 7})
    assert stack.newest_job("sample-talk") is None
    answer = stack.functions["submit"].invoke(event)
    assert answer == {"batchItemFailures": []}
    job = stack.wait_for("sample-talk", timeout=60)
    assert job.status is JobStatus.DELIVERED


def test_the_callback_sample_event_is_refused_for_its_placeholder_signature(stack: LocalStack) -> None:
    answer = stack.functions["callback"].invoke(sample("callback-webhook.json"))
    assert answer["statusCode"] == 401


def test_the_fetch_sample_event_for_an_unknown_job_is_consumed_without_effect(stack: LocalStack) -> None:
    event = sample("fetch-request.json")
    job_id = json.loads(event["Records"][0]["body"])["job_id"]
    assert stack.jobs.get(job_id) is None
    assert stack.functions["fetch"].invoke(event) == {"batchItemFailures": []}
    assert stack.jobs.get(job_id) is None


def test_the_reconcile_sample_event_runs_a_sweep(stack: LocalStack) -> None:
    counts = stack.functions["reconcile"].invoke(sample("reconcile-schedule.json"))
    assert isinstance(counts, dict)
    assert all(isinstance(value, int) for value in counts.values())
