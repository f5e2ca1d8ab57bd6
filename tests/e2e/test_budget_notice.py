"""A hold that crosses half the budget notifies the stack's own alarm topic, from the submit function."""

from __future__ import annotations

import json
from typing import Any

import pytest

from local_stack.samples import portrait_png, voice_wav
from tests.integration.conftest import start_stack, wait_until

pytestmark = pytest.mark.e2e


def test_crossing_half_the_budget_notifies_the_alarm_topic_once() -> None:
    with start_stack(parameters={"MonthlyBudgetUsd": "0.3"}) as stack:
        sns = stack.aws.sns
        assert sns is not None
        topic = stack.resource("AlarmTopic")
        queue_url = stack.sqs.create_queue(QueueName="alarm-listener")["QueueUrl"]
        queue_arn = stack.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

        stack.drop_folder("half", {"image.png": portrait_png(), "audio.wav": voice_wav(3.0)}, {})
        job = stack.wait_for("half", ["delivered"], timeout=60)

        notices: list[dict[str, Any]] = []

        def heard() -> bool:
            for message in stack.sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", []):
                notices.append(json.loads(message["Body"]))
                stack.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            return bool(notices)

        wait_until(heard, timeout=20)
        heard()
        assert [n["Subject"] for n in notices] == [f"InfiniteTalk: 50% of the {job.month} budget is committed"]
        assert notices[0]["TopicArn"] == topic
