"""Budget alerts: once per month at each of 50%, 80% and 100% of the budget, an event and a notification.

The measure is the month's committed money (charged plus held for jobs in flight), the amount the
budget refuses new jobs by, so an alert can come from a submit (a hold) as well as from a delivery
(a charge). "Once" is a conditional write: the first check that sees a threshold crossed creates the
alert's row (``ALERTS#<month>`` / ``ALERT#<pct>`` in the ledger table) and so wins the right to
announce it. The row records what was announced, so an announcement cut short by a crash is finished
by a later check once its lease has run out, and two checks at the same moment never both announce.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict

from . import clients
from .events import BudgetAlertDetail, EventPublisher
from .models import MonthTotal, Timestamp, iso, micros_to_usd, usd_text, utc_now
from .observability import logger, metrics
from .repository import TOTAL_ALL, month_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sns import SNSClient

    from .pipeline import Pipeline

THRESHOLDS = (50, 80, 100)
# How long the check that created (or took over) an alert has to announce it before another may.
CLAIM_SECONDS = 60
SUBJECT_LIMIT = 100

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def alerts_partition(month: str) -> str:
    """Beside the month's ledger partition, not in it: a month's query of totals and lines stays as it is."""
    return f"ALERTS#{month}"


def alert_key(month: str, threshold: int) -> dict[str, Any]:
    return {"pk": {"S": alerts_partition(month)}, "sk": {"S": f"ALERT#{threshold}"}}


def crossed_thresholds(committed_micros: int, budget_micros: int) -> list[int]:
    """The thresholds a committed amount has reached; none without a budget."""
    if budget_micros <= 0:
        return []
    return [t for t in THRESHOLDS if committed_micros * 100 >= budget_micros * t]


class BudgetAlert(BaseModel):
    """One alert row: what the month looked like when the threshold was crossed, and what was announced."""

    model_config = ConfigDict(extra="ignore")

    month: str
    threshold_percent: int
    budget_micros: int
    charged_micros: int
    reserved_micros: int
    job_id: str | None = None
    crossed_at: Timestamp
    claim_until: Timestamp
    published_at: Timestamp | None = None
    notified_at: Timestamp | None = None

    @property
    def committed_micros(self) -> int:
        return self.charged_micros + self.reserved_micros

    def detail(self, occurred_at: datetime) -> BudgetAlertDetail:
        return BudgetAlertDetail.model_validate(
            {
                "month": self.month,
                "threshold_percent": self.threshold_percent,
                "budget_usd": str(micros_to_usd(self.budget_micros)),
                "committed_usd": str(micros_to_usd(self.committed_micros)),
                "charged_usd": str(micros_to_usd(self.charged_micros)),
                "held_usd": str(micros_to_usd(self.reserved_micros)),
                "job_id": self.job_id,
                "crossed_at": self.crossed_at,
                "occurred_at": occurred_at,
            }
        )


def notification(alert: BudgetAlert) -> tuple[str, str]:
    """The SNS subject and text: what was crossed, by how much, and what happens next."""
    subject = f"InfiniteTalk: {alert.threshold_percent}% of the {alert.month} budget is committed"
    lines = [
        f"{alert.threshold_percent}% of the InfiniteTalk budget for {alert.month} is committed.",
        "",
        f"budget      {usd_text(alert.budget_micros)} (MonthlyBudgetUsd)",
        f"committed   {usd_text(alert.committed_micros)} = charged {usd_text(alert.charged_micros)}"
        f" + held {usd_text(alert.reserved_micros)} for jobs in flight",
        f"crossed at  {iso(alert.crossed_at)}" + (f" by job {alert.job_id}" if alert.job_id else ""),
        "",
        "At 100% every new job whose estimate does not fit is refused with an error file, until next month "
        "or until MonthlyBudgetUsd is raised. `infinitetalk ledger` and the console's Money page show the month.",
    ]
    return subject[:SUBJECT_LIMIT], "\n".join(lines)


class BudgetAlertStore:
    """The alert rows and the month's total row they are measured against, in the ledger table."""

    def __init__(self, client: DynamoDBClient, ledger_table: str) -> None:
        self._client = client
        self._ledger = ledger_table

    def month_total(self, month: str) -> MonthTotal | None:
        item = self._client.get_item(TableName=self._ledger, Key=month_key(month, TOTAL_ALL), ConsistentRead=True).get(
            "Item"
        )
        if not item:
            return None
        return MonthTotal.model_validate({k: _deserializer.deserialize(v) for k, v in item.items()})

    def for_month(self, month: str) -> list[BudgetAlert]:
        """Every alert of a month, lowest threshold first (for people: the functions read alerts one by one)."""
        alerts: list[BudgetAlert] = []
        kwargs: dict[str, Any] = {
            "TableName": self._ledger,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": alerts_partition(month)}},
            "ConsistentRead": True,
        }
        while True:
            page = self._client.query(**kwargs)
            for raw in page.get("Items", []):
                alerts.append(BudgetAlert.model_validate({k: _deserializer.deserialize(v) for k, v in raw.items()}))
            if "LastEvaluatedKey" not in page:
                return sorted(alerts, key=lambda a: a.threshold_percent)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get(self, month: str, threshold: int) -> BudgetAlert | None:
        item = self._client.get_item(TableName=self._ledger, Key=alert_key(month, threshold), ConsistentRead=True).get(
            "Item"
        )
        return BudgetAlert.model_validate({k: _deserializer.deserialize(v) for k, v in item.items()}) if item else None

    def create(self, alert: BudgetAlert) -> bool:
        """Record a crossing; ``False`` when the threshold was crossed (and recorded) before.

        An update that may only create: the functions that move money already hold GetItem and
        UpdateItem on the ledger, and alerts need nothing more from it.
        """
        document = alert.model_dump(mode="json", exclude_none=True)
        names = {f"#a{i}": name for i, name in enumerate(document)}
        values = {f":a{i}": _serializer.serialize(value) for i, value in enumerate(document.values())}
        try:
            self._client.update_item(
                TableName=self._ledger,
                Key=alert_key(alert.month, alert.threshold_percent),
                UpdateExpression="SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(document))),
                ConditionExpression="attribute_not_exists(pk)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def take_over(self, month: str, threshold: int, now: datetime, notify: bool) -> BudgetAlert | None:
        """Claim an alert whose announcement is unfinished and whose lease has run out; ``None`` otherwise."""
        unfinished = "attribute_not_exists(published_at)" + (" OR attribute_not_exists(notified_at)" if notify else "")
        try:
            answer = self._client.update_item(
                TableName=self._ledger,
                Key=alert_key(month, threshold),
                UpdateExpression="SET claim_until = :until",
                ConditionExpression=f"attribute_exists(pk) AND claim_until < :now AND ({unfinished})",
                ExpressionAttributeValues={
                    ":now": {"S": iso(now)},
                    ":until": {"S": iso(now + timedelta(seconds=CLAIM_SECONDS))},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return BudgetAlert.model_validate({k: _deserializer.deserialize(v) for k, v in answer["Attributes"].items()})

    def mark(self, month: str, threshold: int, field: str, at: datetime) -> None:
        """Remember one announcement step as done (``published_at`` or ``notified_at``)."""
        self._client.update_item(
            TableName=self._ledger,
            Key=alert_key(month, threshold),
            UpdateExpression="SET #f = :at",
            ExpressionAttributeNames={"#f": field},
            ExpressionAttributeValues={":at": {"S": iso(at)}},
        )


class BudgetAlerts:
    """Measure the month after money moved and announce each threshold crossed for the first time."""

    def __init__(
        self,
        store: BudgetAlertStore,
        events: EventPublisher,
        budget_micros: int,
        sns: SNSClient | None = None,
        topic_arn: str = "",
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self._events = events
        self._budget = budget_micros
        self._sns = sns if topic_arn else None
        self._topic = topic_arn
        self._clock = clock

    def check(self, month: str, job_id: str | None = None) -> list[BudgetAlert]:
        """Announce what is due; returns the alerts this call announced (or finished announcing)."""
        if self._budget <= 0:
            return []
        total = self.store.month_total(month)
        if total is None:
            return []
        reached = crossed_thresholds(total.charged_micros + total.reserved_micros, self._budget)
        if not reached:
            return []
        announced: list[BudgetAlert] = []
        for threshold in reached:
            now = self._clock()
            existing = self.store.get(month, threshold)
            if existing is None:
                alert = BudgetAlert(
                    month=month,
                    threshold_percent=threshold,
                    budget_micros=self._budget,
                    charged_micros=total.charged_micros,
                    reserved_micros=total.reserved_micros,
                    job_id=job_id,
                    crossed_at=now,
                    claim_until=now + timedelta(seconds=CLAIM_SECONDS),
                )
                claimed: BudgetAlert | None = alert if self.store.create(alert) else None
                if claimed is None:
                    # Created by another check a moment ago: it is announcing, or will be taken over later.
                    claimed = self.store.take_over(month, threshold, now, self._sns is not None)
            elif self._finished(existing):
                continue
            else:
                claimed = self.store.take_over(month, threshold, now, self._sns is not None)
            if claimed is not None:
                self._announce(claimed)
                announced.append(claimed)
        return announced

    def _finished(self, alert: BudgetAlert) -> bool:
        return alert.published_at is not None and (self._sns is None or alert.notified_at is not None)

    def _announce(self, alert: BudgetAlert) -> None:
        if alert.published_at is None:
            now = self._clock()
            self._events.publish_budget_alert(alert.detail(now))
            self.store.mark(alert.month, alert.threshold_percent, "published_at", now)
            metrics.add_metric(name="BudgetAlerts", unit="Count", value=1)
        if self._sns is not None and alert.notified_at is None:
            subject, message = notification(alert)
            self._sns.publish(TopicArn=self._topic, Subject=subject, Message=message)
            self.store.mark(alert.month, alert.threshold_percent, "notified_at", self._clock())
        logger.warning(
            "budget alert",
            extra={"month": alert.month, "threshold_percent": alert.threshold_percent, "job_id": alert.job_id},
        )


def budget_alerts_for(pipeline: Pipeline) -> BudgetAlerts:
    """Built from the cold start's cached clients: cheap to make after every money movement."""
    settings = pipeline.settings
    topic = settings.alarm_topic_arn
    return BudgetAlerts(
        BudgetAlertStore(clients.dynamodb_client(), settings.ledger_table),
        EventPublisher(clients.events_client(), settings.event_bus_name),
        settings.budget_micros,
        sns=clients.sns_client() if topic else None,
        topic_arn=topic,
        clock=pipeline.clock,
    )


def check_budget_alerts(month: str, job_id: str, pipeline: Pipeline) -> None:
    """Called after money moved. The money movement stands whatever happens here: a failed announcement
    is logged and finished by the next check of the month."""
    if pipeline.settings.budget_micros <= 0 or not month:
        return
    try:
        budget_alerts_for(pipeline).check(month, job_id)
    except (ClientError, BotoCoreError, RuntimeError) as exc:
        logger.warning("budget alert check failed; the next one retries", extra={"month": month, "error": str(exc)})
