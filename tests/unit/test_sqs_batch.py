"""Partial batch failures: a record that raises comes back alone; the others are done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from infinitetalk_core.sqs_batch import ExpectedRetry, SqsRecord, process_sqs_batch

EVENTS = Path(__file__).resolve().parents[2] / "events"


def event(*bodies: str) -> dict[str, object]:
    return {
        "Records": [{"messageId": f"m{i}", "body": body, "eventSource": "aws:sqs"} for i, body in enumerate(bodies)]
    }


def test_only_the_records_that_raised_are_named_and_every_record_is_tried_in_order() -> None:
    seen: list[str] = []

    def handle(record: SqsRecord) -> None:
        seen.append(record.body)
        if record.body in ("bad", "later"):
            raise (ExpectedRetry if record.body == "later" else ValueError)(record.body)

    answer = process_sqs_batch(event("a", "bad", "b", "later"), handle)
    assert seen == ["a", "bad", "b", "later"]
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}


def test_a_batch_with_no_failure_names_none() -> None:
    assert process_sqs_batch(event("a"), lambda record: None) == {"batchItemFailures": []}


def test_what_ends_the_runtime_is_not_caught() -> None:
    def handle(record: SqsRecord) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        process_sqs_batch(event("a"), handle)


@pytest.mark.parametrize("broken", [{}, {"Records": [{"body": "x"}]}, {"Records": "x"}])
def test_an_event_that_is_not_an_sqs_batch_is_refused_whole(broken: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        process_sqs_batch(broken, lambda record: None)


def test_the_sample_fetch_event_reads_as_a_batch() -> None:
    sample = json.loads((EVENTS / "fetch-request.json").read_text())
    bodies: list[str] = []
    assert process_sqs_batch(sample, lambda record: bodies.append(record.body)) == {"batchItemFailures": []}
    assert bodies == [r["body"] for r in sample["Records"]]
