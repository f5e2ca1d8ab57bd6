"""Budget alerts through the local stack: holds at submit cross 50%, 80% and 100%, each announced once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest

from infinitetalk_core.budget_alerts import BudgetAlertStore
from infinitetalk_core.events import BUDGET_ALERT_DETAIL_TYPE, BUDGET_ALERT_SCHEMA_VERSION, EVENT_SOURCE
from infinitetalk_core.models import FailureKind, JobStatus
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from local_stack.template import ACCOUNT_ID
from tests.integration.conftest import start_stack, wait_until

pytestmark = pytest.mark.integration
TOPIC = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:infinitetalk-alarms"
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / f"budget-alert-{BUDGET_ALERT_SCHEMA_VERSION}.json").read_text()
)


@dataclass
class Listening:
    stack: LocalStack
    events: str
    notices: str

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        found = []
        for message in self.stack.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            found.append(json.loads(message["Body"]))
            self.stack.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return found


def queue(stack: LocalStack, name: str) -> tuple[str, str]:
    url = stack.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


@pytest.fixture(scope="module")
def listening() -> Iterator[Listening]:
    """A $0.30 budget, the alarm topic set, and queues subscribed to the bus and to the topic."""
    with start_stack(parameters={"MonthlyBudgetUsd": "0.3", "AlarmTopicArn": TOPIC}) as stack:
        sns = boto3.client("sns", endpoint_url=stack.endpoint_url, region_name="us-east-1")
        assert sns.create_topic(Name="infinitetalk-alarms")["TopicArn"] == TOPIC
        notices_url, notices_arn = queue(stack, "alarm-listener")
        sns.subscribe(TopicArn=TOPIC, Protocol="sqs", Endpoint=notices_arn)
        events_url, events_arn = queue(stack, "budget-listener")
        bus = stack.resource("JobEventBus")
        pattern = {"source": [EVENT_SOURCE], "detail-type": [BUDGET_ALERT_DETAIL_TYPE]}
        stack.aws.events.put_rule(Name="budget", EventBusName=bus, EventPattern=json.dumps(pattern))
        stack.aws.events.put_targets(Rule="budget", EventBusName=bus, Targets=[{"Id": "q", "Arn": events_arn}])
        yield Listening(stack, events_url, notices_url)


def test_holds_that_cross_each_threshold_announce_it_once_by_event_and_by_notification(listening: Listening) -> None:
    stack = listening.stack
    stack.drop_folder("half", {"image.png": portrait_png(), "audio.wav": voice_wav(3.0)}, {})
    first = stack.wait_for("half", ["delivered"], timeout=60)
    stack.drop_folder("rest", {"image.png": portrait_png(), "audio.wav": voice_wav(3.0)}, {})
    stack.wait_for("rest", ["delivered"], timeout=60)
    stack.drop_folder("over", {"image.png": portrait_png(), "audio.wav": voice_wav(3.0)}, {})
    refused = stack.wait_for("over", timeout=60)
    assert refused.status is JobStatus.REJECTED and refused.failure_kind is FailureKind.BUDGET

    events: list[dict[str, Any]] = []
    notices: list[dict[str, Any]] = []

    def heard_all() -> bool:
        events.extend(listening.drain(listening.events))
        notices.extend(listening.drain(listening.notices))
        return len(events) >= 3 and len(notices) >= 3

    wait_until(heard_all, timeout=20)
    time.sleep(1.5)  # anything announced twice would arrive now
    events.extend(listening.drain(listening.events))
    notices.extend(listening.drain(listening.notices))

    assert sorted(e["detail"]["threshold_percent"] for e in events) == [50, 80, 100]
    for event in events:
        jsonschema.validate(event["detail"], SCHEMA)
        assert event["detail"]["month"] == first.month and event["detail"]["budget_usd"] == "0.300000"
    by_threshold = {e["detail"]["threshold_percent"]: e["detail"] for e in events}
    assert by_threshold[50]["job_id"] == first.job_id and by_threshold[50]["committed_usd"] == "0.150000"
    assert by_threshold[100]["committed_usd"] == "0.300000"
    assert sorted(n["Subject"] for n in notices) == sorted(
        f"InfiniteTalk: {p}% of the {first.month} budget is committed" for p in (50, 80, 100)
    )
    alerts = BudgetAlertStore(stack.aws.dynamodb, stack.ledger_table).for_month(first.month)
    assert [(a.threshold_percent, bool(a.published_at), bool(a.notified_at)) for a in alerts] == [
        (50, True, True),
        (80, True, True),
        (100, True, True),
    ]
