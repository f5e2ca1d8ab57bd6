"""Job events on EventBridge: a versioned, documented contract for integrations."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from .models import FailureKind, Job, JobStatus, ModelName, Resolution, Timestamp, micros_to_usd, utc_now

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

EVENT_SOURCE = "infinitetalk.pipeline"
SCHEMA_VERSION = "1.0"
DETAIL_TYPES: dict[JobStatus, str] = {
    JobStatus.SUBMITTED: "InfiniteTalk Job Submitted",
    JobStatus.DELIVERED: "InfiniteTalk Job Completed",
    JobStatus.FAILED: "InfiniteTalk Job Failed",
    JobStatus.REJECTED: "InfiniteTalk Job Failed",
}
BUDGET_ALERT_DETAIL_TYPE = "InfiniteTalk Budget Alert"
BUDGET_ALERT_SCHEMA_VERSION = "1.0"


class JobEventDetail(BaseModel):
    """The ``detail`` of every job event; ``schema_version`` changes on any incompatible change."""

    model_config = ConfigDict(title="InfiniteTalkJobEvent", extra="forbid")

    schema_version: Literal["1.0"] = "1.0"
    state: Literal["submitted", "completed", "failed"]
    job_id: str
    job_name: str
    model: ModelName | None = None
    resolution: Resolution | None = None
    task_id: str | None = None
    input_keys: list[str] = Field(default_factory=list)
    output_keys: list[str] = Field(default_factory=list)
    output_seconds: str | None = Field(default=None, description="measured video length, decimal seconds")
    billed_seconds: int | None = None
    estimate_usd: str | None = Field(default=None, description="exact decimal dollars")
    charge_usd: str | None = Field(default=None, description="exact decimal dollars")
    rule_set: str | None = None
    failure_kind: FailureKind | None = None
    error: str | None = None
    occurred_at: Timestamp


def detail_for(job: Job) -> JobEventDetail:
    state: Literal["submitted", "completed", "failed"] = (
        "submitted"
        if job.status is JobStatus.SUBMITTED
        else "completed"
        if job.status is JobStatus.DELIVERED
        else "failed"
    )
    spec = job.spec
    return JobEventDetail(
        state=state,
        job_id=job.job_id,
        job_name=job.job_name,
        model=spec.model if spec else None,
        resolution=spec.resolution if spec else None,
        task_id=job.task_id,
        input_keys=sorted(spec.inputs.values()) if spec else job.drop_keys,
        output_keys=job.output_keys,
        output_seconds=str(job.output_seconds) if job.output_seconds is not None else None,
        billed_seconds=job.billed_seconds,
        estimate_usd=str(micros_to_usd(job.estimate_micros)) if job.estimate_micros else None,
        charge_usd=str(micros_to_usd(job.charged_micros)) if job.charged_micros is not None else None,
        rule_set=job.rule_set or None,
        failure_kind=job.failure_kind,
        error=job.error,
        occurred_at=utc_now(),
    )


def event_schema() -> dict[str, object]:
    """The JSON Schema of the event detail, committed under ``schemas/`` for integrators."""
    schema = JobEventDetail.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://infinitetalk.pipeline/schemas/job-event-{SCHEMA_VERSION}.json"
    schema["description"] = f"detail of events with source '{EVENT_SOURCE}' and detail-type one of " + ", ".join(
        sorted(set(DETAIL_TYPES.values()))
    )
    return schema


class BudgetAlertDetail(BaseModel):
    """The ``detail`` of a budget alert: the month's committed money crossed a share of the budget."""

    model_config = ConfigDict(title="InfiniteTalkBudgetAlert", extra="forbid")

    schema_version: Literal["1.0"] = "1.0"
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="UTC month, YYYY-MM")
    threshold_percent: Literal[50, 80, 100]
    budget_usd: str = Field(description="MonthlyBudgetUsd when the threshold was crossed, exact decimal dollars")
    committed_usd: str = Field(description="charged plus held, exact decimal dollars")
    charged_usd: str = Field(description="charged by delivered and failed jobs, exact decimal dollars")
    held_usd: str = Field(description="estimates held for jobs in flight, exact decimal dollars")
    job_id: str | None = Field(default=None, description="the job whose money movement crossed the threshold")
    crossed_at: Timestamp
    occurred_at: Timestamp


def budget_alert_schema() -> dict[str, object]:
    """The JSON Schema of a budget alert's detail, committed under ``schemas/`` beside the job event's."""
    schema = BudgetAlertDetail.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://infinitetalk.pipeline/schemas/budget-alert-{BUDGET_ALERT_SCHEMA_VERSION}.json"
    schema["description"] = (
        f"detail of events with source '{EVENT_SOURCE}' and detail-type '{BUDGET_ALERT_DETAIL_TYPE}', "
        "published once per month at each of 50%, 80% and 100% of the monthly budget"
    )
    return schema


class EventPublisher:
    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus = bus_name

    def publish(self, job: Job, at: datetime | None = None) -> JobEventDetail:
        detail = detail_for(job)
        if at is not None:
            detail = detail.model_copy(update={"occurred_at": at})
        result = self._client.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": DETAIL_TYPES[job.status],
                    "Detail": json.dumps(detail.model_dump(mode="json", exclude_none=True)),
                    "EventBusName": self._bus,
                    "Resources": [job.job_id],
                }
            ]
        )
        if result.get("FailedEntryCount", 0):
            raise RuntimeError(f"EventBridge refused the event for {job.job_id}: {result['Entries']}")
        return detail

    def publish_budget_alert(self, detail: BudgetAlertDetail) -> None:
        result = self._client.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": BUDGET_ALERT_DETAIL_TYPE,
                    "Detail": json.dumps(detail.model_dump(mode="json", exclude_none=True)),
                    "EventBusName": self._bus,
                }
            ]
        )
        if result.get("FailedEntryCount", 0):
            raise RuntimeError(f"EventBridge refused the budget alert for {detail.month}: {result['Entries']}")
