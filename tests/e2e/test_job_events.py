"""Integrations hear every state change on the stack's event bus, in the published schema."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from infinitetalk_core.events import EVENT_SOURCE, SCHEMA_VERSION
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.integration.conftest import start_stack

pytestmark = pytest.mark.e2e
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / f"job-event-{SCHEMA_VERSION}.json").read_text())


@pytest.fixture(scope="module")
def listening() -> Iterator[tuple[LocalStack, str]]:
    """The stack, plus a queue subscribed to its bus as an integration would subscribe."""
    with start_stack() as stack:
        bus = stack.resource("JobEventBus")
        queue_url = stack.sqs.create_queue(QueueName="integration-listener")["QueueUrl"]
        queue_arn = stack.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        stack.aws.events.put_rule(
            Name="all-job-events", EventBusName=bus, EventPattern=json.dumps({"source": [EVENT_SOURCE]})
        )
        stack.aws.events.put_targets(
            Rule="all-job-events", EventBusName=bus, Targets=[{"Id": "listener", "Arn": queue_arn}]
        )
        yield stack, queue_url


def heard(stack: LocalStack, queue_url: str, job_id: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(events) < count:
        for message in stack.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            event = json.loads(message["Body"])
            if event["detail"]["job_id"] == job_id:
                events.append(event)
            stack.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return events


def test_a_delivered_job_announces_submitted_then_completed_with_its_charge(listening: tuple[LocalStack, str]) -> None:
    stack, queue_url = listening
    stack.drop_folder("announced", {"image.png": portrait_png(), "audio.wav": voice_wav(5.5)}, {"resolution": "720p"})
    job = stack.wait_for("announced", timeout=60)
    events = heard(stack, queue_url, job.job_id, 2)
    assert [e["detail-type"] for e in events] == ["InfiniteTalk Job Submitted", "InfiniteTalk Job Completed"]
    for event in events:
        assert event["source"] == EVENT_SOURCE
        jsonschema.validate(event["detail"], SCHEMA)
    completed = events[1]["detail"]
    assert completed["state"] == "completed" and completed["schema_version"] == SCHEMA_VERSION
    assert completed["charge_usd"] == "0.360000" and completed["billed_seconds"] == 6
    assert completed["output_keys"] == ["outputs/announced/video.mp4"]


def test_a_refused_drop_announces_failed_with_what_is_wrong(listening: tuple[LocalStack, str]) -> None:
    stack, queue_url = listening
    stack.drop_folder("refused", {"image.png": b"plain text", "audio.wav": voice_wav(1.0)}, {})
    job = stack.wait_for("refused", timeout=60)
    (event,) = heard(stack, queue_url, job.job_id, 1)
    assert event["detail-type"] == "InfiniteTalk Job Failed"
    jsonschema.validate(event["detail"], SCHEMA)
    assert event["detail"]["failure_kind"] == "invalid_input"
    assert "plain text" in event["detail"]["error"]
