"""Budget alerts: each of 50%, 80% and 100% announced once a month, however many checks race for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import jsonschema
import pytest
from moto import mock_aws

from infinitetalk_core.budget_alerts import (
    CLAIM_SECONDS,
    BudgetAlerts,
    BudgetAlertStore,
    crossed_thresholds,
    notification,
)
from infinitetalk_core.events import (
    BUDGET_ALERT_DETAIL_TYPE,
    BUDGET_ALERT_SCHEMA_VERSION,
    EVENT_SOURCE,
    BudgetAlertDetail,
    EventPublisher,
    budget_alert_schema,
)
from infinitetalk_core.models import Job, JobSpec, JobStatus, ModelName, Role
from infinitetalk_core.repository import JobRepository
from tests.cli.conftest import table_properties

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

ROOT = Path(__file__).resolve().parents[2]
MONTH = "2026-11"
BUDGET = 1_000_000  # $1.00
SCHEMA = ROOT / "schemas" / f"budget-alert-{BUDGET_ALERT_SCHEMA_VERSION}.json"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 12, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Account:
    jobs: JobRepository
    store: BudgetAlertStore
    events: EventPublisher
    sns: Any
    topic: str
    sqs: SQSClient
    heard_events: str
    heard_notices: str
    clock: Clock

    def alerts(self, budget: int = BUDGET, topic: bool = True) -> BudgetAlerts:
        return BudgetAlerts(
            self.store,
            self.events,
            budget,
            sns=self.sns if topic else None,
            topic_arn=self.topic if topic else "",
            clock=self.clock,
        )

    def hold(self, name: str, micros: int) -> Job:
        """A submitted job's estimate, held against the month as the submit function holds it."""
        job = Job(
            job_id=f"{name}-0123456789ab",
            job_name=name,
            status=JobStatus.SUBMITTED,
            status_since=self.clock(),
            created_at=self.clock(),
            spec=JobSpec(name=name, model=ModelName.SINGLE, inputs={Role.IMAGE: "i.png", Role.AUDIO: "a.wav"}),
            month=MONTH,
            rule_set="seeds-output-5s",
            estimate_micros=micros,
            reserved_micros=micros,
        )
        self.jobs.create_with_reservation(job, budget_micros=0)
        return job

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        bodies = []
        while messages := self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return bodies


def listener(sqs: SQSClient, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(TableName="jobs", **table_properties("JobsTable"))
        dynamodb.create_table(TableName="ledger", **table_properties("LedgerTable"))
        events = boto3.client("events")
        sns = boto3.client("sns")
        sqs = boto3.client("sqs")
        events.create_event_bus(Name="bus")
        events_url, events_arn = listener(sqs, "heard-events")
        events.put_rule(Name="alerts", EventBusName="bus", EventPattern=json.dumps({"source": [EVENT_SOURCE]}))
        events.put_targets(Rule="alerts", EventBusName="bus", Targets=[{"Id": "q", "Arn": events_arn}])
        topic = sns.create_topic(Name="alarms")["TopicArn"]
        notices_url, notices_arn = listener(sqs, "heard-notices")
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=notices_arn)
        yield Account(
            jobs=JobRepository(dynamodb, "jobs", "ledger"),
            store=BudgetAlertStore(dynamodb, "ledger"),
            events=EventPublisher(events, "bus"),
            sns=sns,
            topic=topic,
            sqs=sqs,
            heard_events=events_url,
            heard_notices=notices_url,
            clock=Clock(),
        )


@pytest.mark.parametrize(
    ("committed", "expected"),
    [(0, []), (499_999, []), (500_000, [50]), (799_999, [50]), (800_000, [50, 80]), (1_000_000, [50, 80, 100])],
)
def test_thresholds_are_reached_at_exactly_their_share(committed: int, expected: list[int]) -> None:
    assert crossed_thresholds(committed, BUDGET) == expected


def test_no_budget_means_no_thresholds() -> None:
    assert crossed_thresholds(10**12, 0) == []


def test_each_threshold_is_announced_once_with_an_event_and_a_notification(account: Account) -> None:
    first = account.hold("a", 450_000)
    assert account.alerts().check(MONTH, first.job_id) == []

    second = account.hold("b", 100_000)  # 55%: crosses 50
    announced = account.alerts().check(MONTH, second.job_id)
    assert [a.threshold_percent for a in announced] == [50]
    assert account.alerts().check(MONTH, second.job_id) == [], "the same crossing is not announced again"

    third = account.hold("c", 500_000)  # 105%: crosses 80 and 100 in one movement
    assert [a.threshold_percent for a in account.alerts().check(MONTH, third.job_id)] == [80, 100]

    events = account.drain(account.heard_events)
    assert [e["detail"]["threshold_percent"] for e in events] == [50, 80, 100]
    schema = json.loads(SCHEMA.read_text())
    for event in events:
        assert event["detail-type"] == BUDGET_ALERT_DETAIL_TYPE and event["source"] == EVENT_SOURCE
        jsonschema.validate(event["detail"], schema)
    assert events[0]["detail"]["committed_usd"] == "0.550000"
    assert events[0]["detail"]["held_usd"] == "0.550000" and events[0]["detail"]["charged_usd"] == "0.000000"
    assert events[0]["detail"]["job_id"] == second.job_id
    notices = account.drain(account.heard_notices)
    assert [n["Subject"] for n in notices] == [
        f"InfiniteTalk: {p}% of the {MONTH} budget is committed" for p in (50, 80, 100)
    ]
    assert "committed   $0.55 = charged $0.00 + held $0.55" in notices[0]["Message"]
    stored = account.store.for_month(MONTH)
    assert [(a.threshold_percent, a.published_at is not None, a.notified_at is not None) for a in stored] == [
        (50, True, True),
        (80, True, True),
        (100, True, True),
    ]


def test_a_check_that_comes_while_another_is_announcing_announces_nothing(
    account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moment two checks meet: the second finds the first's row, its lease still running."""
    job = account.hold("a", 800_000)
    second: list[list[int]] = []
    interrupted = False
    publish = account.events.publish_budget_alert

    def publish_while_another_checks(detail: BudgetAlertDetail) -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            second.append([a.threshold_percent for a in account.alerts().check(MONTH, job.job_id)])
        publish(detail)

    monkeypatch.setattr(account.events, "publish_budget_alert", publish_while_another_checks)
    first = [a.threshold_percent for a in account.alerts().check(MONTH, job.job_id)]

    assert second == [[80]], "the second check skips the 50% the first holds, and takes the 80% nobody held"
    assert first == [50], "the first finds the 80% announced already"
    assert sorted(e["detail"]["threshold_percent"] for e in account.drain(account.heard_events)) == [50, 80]
    assert len(account.drain(account.heard_notices)) == 2


def test_the_checks_reads_and_writes_are_the_ones_the_money_moving_functions_hold(account: Account) -> None:
    """GetItem and UpdateItem on the ledger: no Query, no PutItem, so the functions' roles need nothing new."""
    operations: list[str] = []
    client = account.store._client
    client.meta.events.register("before-call.dynamodb", lambda model, **_: operations.append(model.name))
    job = account.hold("a", 1_000_000)
    operations.clear()

    account.alerts().check(MONTH, job.job_id)
    account.alerts().check(MONTH, job.job_id)

    assert set(operations) == {"GetItem", "UpdateItem"}, operations


def test_an_announcement_cut_short_is_finished_by_a_later_check_once_its_lease_ran_out(
    account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = account.hold("a", 600_000)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("EventBridge is unavailable")

    monkeypatch.setattr(account.events, "publish_budget_alert", broken)
    with pytest.raises(RuntimeError):
        account.alerts().check(MONTH, job.job_id)
    monkeypatch.undo()
    assert account.alerts().check(MONTH, job.job_id) == [], "the lease still holds: no second announcer"
    assert account.drain(account.heard_events) == []

    account.clock.now += timedelta(seconds=CLAIM_SECONDS + 1)
    finished = account.alerts().check(MONTH, job.job_id)

    assert [a.threshold_percent for a in finished] == [50]
    assert finished[0].crossed_at == datetime(2026, 11, 12, 10, 0, tzinfo=UTC), "the first crossing is kept"
    assert len(account.drain(account.heard_events)) == 1
    assert len(account.drain(account.heard_notices)) == 1
    assert account.alerts().check(MONTH, job.job_id) == []


def test_without_a_topic_only_the_event_is_sent_and_without_a_budget_nothing(account: Account) -> None:
    job = account.hold("a", 900_000)

    assert account.alerts(budget=0).check(MONTH, job.job_id) == []
    assert account.store.for_month(MONTH) == []
    assert [a.threshold_percent for a in account.alerts(topic=False).check(MONTH, job.job_id)] == [50, 80]

    assert len(account.drain(account.heard_events)) == 2
    assert account.drain(account.heard_notices) == []


def test_alerts_live_beside_the_months_ledger_and_leave_its_totals_as_they_are(account: Account) -> None:
    job = account.hold("a", 900_000)
    totals_before, entries_before = account.jobs.month(MONTH)

    account.alerts().check(MONTH, job.job_id)

    assert account.jobs.month(MONTH) == (totals_before, entries_before)
    assert len(account.store.for_month(MONTH)) == 2
    assert account.store.for_month("2026-12") == []


def test_the_notification_says_what_was_crossed_and_what_follows(account: Account) -> None:
    job = account.hold("a", 1_000_000)
    (_, _, full) = account.alerts(topic=False).check(MONTH, job.job_id)

    subject, message = notification(full)

    assert subject == f"InfiniteTalk: 100% of the {MONTH} budget is committed" and len(subject) <= 100
    assert "budget      $1.00 (MonthlyBudgetUsd)" in message
    assert f"by job {job.job_id}" in message
    assert "refused" in message


def test_committed_alert_schema_matches_the_code() -> None:
    committed = json.loads(SCHEMA.read_text())
    assert committed == json.loads(json.dumps(budget_alert_schema())), "run `make schema` and commit the result"
    assert committed["properties"]["threshold_percent"]["enum"] == [50, 80, 100]
