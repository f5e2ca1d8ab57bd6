"""DynamoDB access: job rows (with the webhooks each accepted), drop folders' latest arrivals, the ledger,
month totals and task charges.

Every state change is a conditional write from a known status, and every money movement
happens in the same transaction as the status change that justifies it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel

from .billing import Charge
from .models import FailureKind, Job, JobStatus, LedgerEntry, MonthTotal, iso, utc_now
from .webhooks import token_digest

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

STATUS_INDEX = "StatusIndex"
NAME_INDEX = "NameIndex"
TOTAL_ALL = "TOTAL#ALL"
FOLDER_ARRIVAL_TTL_SECONDS = 7 * 24 * 3600
# Statuses whose first arrival the job row keeps (``<status>_at``) for its timeline.
TIMED_STATUSES = frozenset({JobStatus.SUBMITTED, JobStatus.REPORTED, JobStatus.DELIVERED, JobStatus.FAILED})
# The ledger's item per WaveSpeed task: which job holds the task, and its one charge.
TASK_CHARGE = "CHARGE"
# Stored beside the job's webhook token; conditions compare this, never the token itself.
TOKEN_DIGEST_ATTRIBUTE = "webhook_token_sha256"  # noqa: S105 - an attribute name
# The webhook delivery ids a job row accepted (a string set): a replay of one of them changes nothing.
ACCEPTED_WEBHOOKS_ATTRIBUTE = "webhook_ids"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class StaleTransition(Exception):
    """The row was not in the status the change starts from: someone else moved it first."""


class DuplicateJob(Exception):
    """A job with this id already exists: the event is a repeat."""


class BudgetExceeded(Exception):
    """The estimate would take the month's committed spend over the budget."""


class TaskAlreadyCharged(StaleTransition):
    """Another job holds this WaveSpeed task's charge: settling this job would charge the task twice."""

    def __init__(self, task_id: str, owner_job_id: str | None) -> None:
        super().__init__(f"task {task_id} is already charged to job {owner_job_id or '(unknown)'}")
        self.task_id = task_id
        self.owner_job_id = owner_job_id


class TaskHeldByAnotherJob(StaleTransition):
    """The WaveSpeed task is already recorded for another job: it is never recorded for a second one."""

    def __init__(self, task_id: str, holder_job_id: str | None) -> None:
        super().__init__(f"task {task_id} is held by job {holder_job_id or '(unknown)'}")
        self.task_id = task_id
        self.holder_job_id = holder_job_id


@dataclass(frozen=True)
class DeliveryProof:
    """What a webhook brings besides its signature: its delivery id, and the token of the URL it came to."""

    webhook_id: str
    token: str


class ReportNotRecorded(Exception):
    """A finished task was not recorded for the job; the fields say what stood in the way, without a read.

    ``current``: the job row as the refused write saw it (``None`` when there is no such job).
    ``webhook_seen``: the job accepted this delivery id before.
    """

    def __init__(self, current: Job | None, webhook_seen: bool) -> None:
        super().__init__("report not recorded")
        self.current = current
        self.webhook_seen = webhook_seen


def _attrs(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _dynamo_value(value: Any) -> Any:
    """Python values as DynamoDB takes them: text times and enums, exact decimals, no floats or nulls."""
    if isinstance(value, BaseModel):
        return _dynamo_value(value.model_dump(exclude_none=True))
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {str(_dynamo_value(k)): _dynamo_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_dynamo_value(v) for v in value]
    return value


def _document(model: BaseModel) -> dict[str, Any]:
    document: dict[str, Any] = _dynamo_value(model)
    return document


def job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}}


def folder_key(name: str) -> dict[str, Any]:
    return {"pk": {"S": f"FOLDER#{name}"}}


def month_key(month: str, sort: str) -> dict[str, Any]:
    return {"pk": {"S": f"MONTH#{month}"}, "sk": {"S": sort}}


def model_total_sort_key(model: str, resolution: str) -> str:
    return f"TOTAL#{model}#{resolution}"


def _is_conditional_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _cancellation_codes(exc: ClientError) -> list[str]:
    reasons = exc.response.get("CancellationReasons", [])
    return [str(reason.get("Code", "None")) for reason in reasons]


def _cancellation_item(exc: ClientError, index: int) -> dict[str, Any] | None:
    """The item as it was when its condition failed (asked for with ``ReturnValuesOnConditionCheckFailure``)."""
    reasons = exc.response.get("CancellationReasons", [])
    if index >= len(reasons):
        return None
    item: dict[str, Any] | None = reasons[index].get("Item")  # type: ignore[assignment]
    return item or None


def task_key(task_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"TASK#{task_id}"}, "sk": {"S": TASK_CHARGE}}


class JobRepository:
    def __init__(self, client: DynamoDBClient, jobs_table: str, ledger_table: str) -> None:
        self._client = client
        self._jobs = jobs_table
        self._ledger = ledger_table

    # ---- reads -------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        item = self._client.get_item(TableName=self._jobs, Key=job_key(job_id), ConsistentRead=True).get("Item")
        return Job.model_validate(_plain(item)) if item else None

    def in_status(self, status: JobStatus, since_before: datetime, limit: int = 100) -> list[Job]:
        """Jobs that have sat in ``status`` since before a moment, oldest first.

        The index may carry keys only (``JobIndexProjection``), so the rows are read by key, strongly
        consistent; one that has moved on since the index saw it is left out.
        """
        keys: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._jobs,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "#s = :s AND status_since < :t",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":s": {"S": status.value}, ":t": {"S": iso(since_before)}},
            "ProjectionExpression": "pk",
            "Limit": limit,
        }
        while len(keys) < limit:
            page = self._client.query(**kwargs)
            keys.extend({"pk": item["pk"]} for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        jobs = self._jobs_by_key(keys[:limit])
        return [job for job in jobs if job.status is status and job.status_since < since_before]

    def by_name(self, job_name: str) -> list[Job]:
        """The jobs of one drop name, newest first (one page of the index: hundreds of jobs)."""
        page = self._client.query(
            TableName=self._jobs,
            IndexName=NAME_INDEX,
            KeyConditionExpression="job_name = :n",
            ExpressionAttributeValues={":n": {"S": job_name}},
            ProjectionExpression="pk",
            ScanIndexForward=False,
        )
        return self._jobs_by_key([{"pk": item["pk"]} for item in page.get("Items", [])])

    def _jobs_by_key(self, keys: list[dict[str, Any]]) -> list[Job]:
        """Whole job rows for index keys, in the keys' order; a row deleted meanwhile is left out."""
        rows = {str(item["pk"]["S"]): item for item in self._batch_get(self._jobs, keys)}
        return [Job.model_validate(_plain(rows[key["pk"]["S"]])) for key in keys if key["pk"]["S"] in rows]

    def _batch_get(self, table: str, keys: list[dict[str, Any]], projection: str | None = None) -> list[dict[str, Any]]:
        """Items by key, strongly consistent, 100 keys a request; keys DynamoDB left unprocessed are asked again."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), 100):
            wanted: dict[str, Any] = {"Keys": keys[start : start + 100], "ConsistentRead": True}
            if projection:
                wanted["ProjectionExpression"] = projection
            request: dict[str, Any] = {table: wanted}
            for attempt in range(8):
                answer = self._client.batch_get_item(RequestItems=request)
                found.extend(answer.get("Responses", {}).get(table, []))
                request = dict(answer.get("UnprocessedKeys") or {})
                if not request:
                    break
                time.sleep(random.uniform(0.02, 0.1) * 2**attempt)
            else:
                raise RuntimeError(f"DynamoDB left items of {table} unread after eight tries")
        return found

    def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs across all statuses, for people looking at the system (a scan: small tables only)."""
        jobs: list[Job] = []
        kwargs: dict[str, Any] = {
            "TableName": self._jobs,
            "FilterExpression": "begins_with(pk, :p)",
            "ExpressionAttributeValues": {":p": {"S": "JOB#"}},
        }
        while True:
            page = self._client.scan(**kwargs)
            jobs.extend(Job.model_validate(_plain(i)) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)[:limit]

    def month(self, month: str) -> tuple[list[MonthTotal], list[LedgerEntry]]:
        """Every total and ledger line of a month with one query."""
        totals: list[MonthTotal] = []
        entries: list[LedgerEntry] = []
        kwargs: dict[str, Any] = {
            "TableName": self._ledger,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": f"MONTH#{month}"}},
            "ConsistentRead": True,
        }
        while True:
            page = self._client.query(**kwargs)
            for raw in page.get("Items", []):
                item = _plain(raw)
                if item["sk"].startswith("ENTRY#"):
                    entries.append(LedgerEntry.model_validate(item))
                else:
                    totals.append(MonthTotal.model_validate(item))
            if "LastEvaluatedKey" not in page:
                return totals, entries
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # ---- writes ------------------------------------------------------------------------
    def put_new(self, job: Job) -> None:
        """Record a job that holds no money (a rejection); a repeat of the same drop changes nothing."""
        try:
            self._client.put_item(
                TableName=self._jobs,
                Item=self._job_item(job),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                raise DuplicateJob(job.job_id) from exc
            raise

    def create_with_reservation(self, job: Job, budget_micros: int) -> None:
        """Create the job row and hold its estimate against the month's budget, atomically."""
        total_update: dict[str, Any] = {
            "TableName": self._ledger,
            "Key": month_key(job.month, TOTAL_ALL),
            "UpdateExpression": "SET #m = :m ADD committed_micros :r, reserved_micros :r",
            "ExpressionAttributeNames": {"#m": "month"},
            "ExpressionAttributeValues": _attrs({":r": job.reserved_micros, ":m": job.month}),
        }
        if budget_micros > 0:
            headroom = budget_micros - job.reserved_micros
            if headroom < 0:
                raise BudgetExceeded(job.job_id)
            total_update["ConditionExpression"] = "attribute_not_exists(committed_micros) OR committed_micros <= :h"
            total_update["ExpressionAttributeValues"][":h"] = {"N": str(headroom)}
        items: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self._jobs,
                    "Item": self._job_item(job),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Update": total_update},  # type: ignore[typeddict-item]
        ]
        try:
            self._transact(items)
        except ClientError as exc:
            codes = _cancellation_codes(exc)
            if codes and codes[0] == "ConditionalCheckFailed":
                raise DuplicateJob(job.job_id) from exc
            if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                raise BudgetExceeded(job.job_id) from exc
            raise

    def transition(
        self,
        job: Job,
        to: JobStatus,
        from_statuses: Iterable[JobStatus],
        *,
        only_if_failure: Collection[FailureKind] | None = None,
        **changes: Any,
    ) -> Job:
        """Move a job to ``to`` only if it is still in one of ``from_statuses``.

        ``only_if_failure`` narrows a move out of FAILED to failures of those kinds.
        """
        update, condition, names, values = self._update_parts(to, from_statuses, changes)
        condition = self._narrow_failure(condition, values, only_if_failure)
        try:
            result = self._client.update_item(
                TableName=self._jobs,
                Key=job_key(job.job_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                raise StaleTransition(f"{job.job_id} is no longer {', '.join(s.value for s in from_statuses)}") from exc
            raise
        return Job.model_validate(_plain(result["Attributes"]))

    def note_folder_arrival(self, name: str, arrived_at: datetime) -> None:
        """Remember the latest time a file of this drop folder landed (kept a week, then a look lists again)."""
        try:
            self._client.update_item(
                TableName=self._jobs,
                Key=folder_key(name),
                UpdateExpression="SET latest_arrival = :at, expires_at = :expires",
                ConditionExpression="attribute_not_exists(latest_arrival) OR latest_arrival < :at",
                ExpressionAttributeValues={
                    ":at": {"S": iso(arrived_at)},
                    ":expires": {"N": str(int(time.time()) + FOLDER_ARRIVAL_TTL_SECONDS)},
                },
            )
        except ClientError as exc:
            if not _is_conditional_failure(exc):
                raise
            # A later file of the folder is noted already.

    def folder_arrival_after(self, name: str, arrived_at: datetime) -> bool:
        """Whether a file of this folder landed strictly later than ``arrived_at`` (a strongly consistent read)."""
        item = self._client.get_item(
            TableName=self._jobs, Key=folder_key(name), ConsistentRead=True, ProjectionExpression="latest_arrival"
        ).get("Item")
        latest = (item or {}).get("latest_arrival", {}).get("S", "")
        return bool(latest) and latest > iso(arrived_at)

    def mark_published(self, job: Job) -> None:
        """Remember that the event of the job's current status went out.

        Only the flag changes: the status and ``status_since`` (the status index's key) stay, so the
        write touches no index key and the job keeps its place in the reconcile sweeps. Raises
        ``StaleTransition`` when the job has moved on (its new status has an event of its own).
        """
        try:
            self._client.update_item(
                TableName=self._jobs,
                Key=job_key(job.job_id),
                UpdateExpression="SET event_published = :published",
                ConditionExpression="#status = :status",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":published": {"BOOL": True}, ":status": {"S": job.status.value}},
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                raise StaleTransition(f"{job.job_id} is no longer {job.status.value}") from exc
            raise

    def report_task(
        self,
        job_id: str,
        task_id: str,
        model: str,
        from_statuses: Iterable[JobStatus],
        *,
        only_if_failure: Collection[FailureKind] | None = None,
        proof: DeliveryProof | None = None,
    ) -> None:
        """Record that the job's task finished (status REPORTED) in one conditional write, with no read first.

        The condition holds the whole rule: a status the report may move, no other task, the job's
        model and, for a webhook's ``proof``, the job's token and a delivery id the row has not accepted
        yet (the row keeps the ids it accepted, so only an accepted delivery uses up its id). A job that
        already holds its task (``record_task`` wrote both) takes one UpdateItem. One whose task id never
        reached it takes a transaction that also holds the task for it (the ledger's ``TASK#`` item), so
        the history lookup reads every reported task from the ledger. ``ReportNotRecorded`` otherwise.
        """
        update, condition, names, values = self._update_parts(
            JobStatus.REPORTED,
            from_statuses,
            {"task_id": task_id, "failure_kind": None, "error": None, "event_published": False},
        )
        clauses = [self._narrow_failure(condition, values, only_if_failure)]
        values[":task"] = {"S": task_id}
        if model:
            names.update({"#spec": "spec", "#model": "model"})
            clauses.append("#spec.#model = :model")
            values[":model"] = {"S": model}
        if proof is not None:
            names.update({"#token": TOKEN_DIGEST_ATTRIBUTE, "#seen": ACCEPTED_WEBHOOKS_ATTRIBUTE})
            clauses.insert(0, "#token = :token")
            clauses.append("NOT contains(#seen, :webhook)")
            values.update(
                {
                    ":token": {"S": token_digest(proof.token)},
                    ":webhook": {"S": proof.webhook_id},
                    ":webhooks": {"SS": [proof.webhook_id]},
                }
            )
            update += " ADD #seen :webhooks"
        job_update: dict[str, Any] = {
            "TableName": self._jobs,
            "Key": job_key(job_id),
            "UpdateExpression": update,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        any_task = " AND ".join([*clauses, "(attribute_not_exists(task_id) OR task_id = :task)"])
        if proof is None:
            self._report(job_update, any_task, proof)
            return
        try:
            self._report(job_update, " AND ".join([*clauses, "task_id = :task"]), proof)
            return
        except ReportNotRecorded as refused:
            if refused.current is None or refused.current.task_id is not None:
                raise
        items: list[TransactWriteItemTypeDef] = [
            {"Update": {**job_update, "ConditionExpression": any_task}},  # type: ignore[typeddict-item]
            {"Update": self._hold_update(task_id, job_id)},  # type: ignore[typeddict-item]
        ]
        try:
            self._transact(items)
        except ClientError as exc:
            codes = [*_cancellation_codes(exc), "None", "None"]
            if "ConditionalCheckFailed" not in codes or "TransactionConflict" in codes:
                # A conflict is no verdict on the report: let the sender try again.
                raise
            if codes[0] == "None":
                # Only the hold refused: another job holds the task. The report is recorded without it,
                # and the fetch, finding the other holder, releases this job without a charge.
                self._report(job_update, any_task, proof)
                return
            raise self._report_refused(_cancellation_item(exc, 0), proof) from exc

    def _report(self, job_update: Mapping[str, Any], condition: str, proof: DeliveryProof | None) -> None:
        try:
            self._client.update_item(**job_update, ConditionExpression=condition)
        except ClientError as exc:
            if _is_conditional_failure(exc):
                raise self._report_refused(exc.response.get("Item"), proof) from exc  # type: ignore[arg-type]
            raise

    def _report_refused(self, old: Mapping[str, Any] | None, proof: DeliveryProof | None) -> ReportNotRecorded:
        seen = proof is not None and proof.webhook_id in _plain(old or {}).get(ACCEPTED_WEBHOOKS_ATTRIBUTE, set())
        return ReportNotRecorded(self._job_or_none(old), seen)

    def _hold_update(self, task_id: str, job_id: str) -> dict[str, Any]:
        """The ledger's ``TASK#`` item names the job holding the task; only that job may write it again."""
        return {
            "TableName": self._ledger,
            "Key": task_key(task_id),
            "UpdateExpression": "SET job_id = :job, claimed_at = if_not_exists(claimed_at, :now)",
            "ConditionExpression": "attribute_not_exists(pk) OR job_id = :job",
            "ExpressionAttributeValues": _attrs({":job": job_id, ":now": iso(utc_now())}),
        }

    def claim_task(self, task_id: str, job_id: str) -> str:
        """Hold a WaveSpeed task for one job before anything is fetched for it; returns the job that holds it."""
        try:
            self._client.update_item(
                **self._hold_update(task_id, job_id), ReturnValuesOnConditionCheckFailure="ALL_OLD"
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                holder = _plain(exc.response.get("Item") or {}).get("job_id")  # type: ignore[arg-type]
                return str(holder or "")
            raise
        return job_id

    def record_task(
        self, job: Job, to: JobStatus, from_statuses: Iterable[JobStatus], task_id: str, **changes: Any
    ) -> Job:
        """Record a task id on a job and hold the task for it (the ledger's ``TASK#`` item), atomically.

        The same item ``claim_task`` and the charge use, so a task is held by one job from the moment
        its id is known: a second job can never take it, whatever path it comes by.
        Raises ``StaleTransition`` (the job moved on) or ``TaskHeldByAnotherJob``.
        """
        update, condition, names, values = self._update_parts(to, from_statuses, {**changes, "task_id": task_id})
        items: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self._jobs,
                    "Key": job_key(job.job_id),
                    "UpdateExpression": update,
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            },
            {"Update": {**self._hold_update(task_id, job.job_id), "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},  # type: ignore[typeddict-item]
        ]
        try:
            self._transact(items)
        except ClientError as exc:
            codes = [*_cancellation_codes(exc), "None", "None"]
            if codes[0] == "ConditionalCheckFailed":
                raise StaleTransition(f"{job.job_id} is no longer {', '.join(s.value for s in from_statuses)}") from exc
            if codes[1] == "ConditionalCheckFailed":
                holder = _plain(_cancellation_item(exc, 1) or {}).get("job_id")
                raise TaskHeldByAnotherJob(task_id, str(holder) if holder else None) from exc
            raise
        # The row as written, without reading it back (the callers' roles need no read for this).
        return job.model_copy(update={**changes, "status": to, "task_id": task_id, "status_since": utc_now()})

    def task_holders(self, task_ids: Iterable[str]) -> dict[str, str]:
        """Which job holds each of these tasks (strongly consistent); a task no job holds is absent."""
        keys = [task_key(task_id) for task_id in sorted(set(task_ids))]
        holders: dict[str, str] = {}
        for raw in self._batch_get(self._ledger, keys, projection="pk, job_id"):
            item = _plain(raw)
            holders[str(item["pk"]).removeprefix("TASK#")] = str(item.get("job_id", ""))
        return holders

    def settle(
        self,
        job: Job,
        to: JobStatus,
        from_statuses: Iterable[JobStatus],
        entry: LedgerEntry | None,
        charge: Charge | None,
        **changes: Any,
    ) -> None:
        """Finish a job and settle its money in one transaction: the ledger line is written once."""
        update, condition, names, values = self._update_parts(to, from_statuses, changes)
        charged = charge.micros if charge else 0
        items: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self._jobs,
                    "Key": job_key(job.job_id),
                    "UpdateExpression": update,
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            },
            {
                "Update": {
                    "TableName": self._ledger,
                    "Key": month_key(job.month, TOTAL_ALL),
                    "UpdateExpression": "SET #m = :m ADD committed_micros :c, reserved_micros :r, charged_micros :x"
                    + (", jobs :one, billed_seconds :b" if entry else ""),
                    "ExpressionAttributeNames": {"#m": "month"},
                    "ExpressionAttributeValues": _attrs(
                        {
                            ":m": job.month,
                            ":c": charged - job.reserved_micros,
                            ":r": -job.reserved_micros,
                            ":x": charged,
                            **({":one": 1, ":b": entry.billed_seconds} if entry else {}),
                        }
                    ),
                }
            },
        ]
        if entry is not None:
            items.append(
                {
                    "Put": {
                        "TableName": self._ledger,
                        "Item": _attrs(
                            {"pk": f"MONTH#{entry.month}", "sk": f"ENTRY#{entry.job_id}", **_document(entry)}
                        ),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
            items.append(
                {
                    "Update": {
                        "TableName": self._ledger,
                        "Key": month_key(entry.month, model_total_sort_key(entry.model.value, entry.resolution.value)),
                        "UpdateExpression": "SET #m = :m, model = :model, resolution = :res "
                        "ADD jobs :one, billed_seconds :b, charged_micros :x",
                        "ExpressionAttributeNames": {"#m": "month"},
                        "ExpressionAttributeValues": _attrs(
                            {
                                ":m": entry.month,
                                ":model": entry.model.value,
                                ":res": entry.resolution.value,
                                ":one": 1,
                                ":b": entry.billed_seconds,
                                ":x": entry.charged_micros,
                            }
                        ),
                    }
                }
            )
            # At most one charge per WaveSpeed task, whichever job it is settled for.
            items.append(
                {
                    "Update": {
                        "TableName": self._ledger,
                        "Key": task_key(entry.task_id),
                        "UpdateExpression": "SET job_id = :job, #m = :m, charged_micros = :x, charged_at = :at",
                        "ConditionExpression": "attribute_not_exists(pk) "
                        "OR (job_id = :job AND attribute_not_exists(charged_micros))",
                        "ExpressionAttributeNames": {"#m": "month"},
                        "ExpressionAttributeValues": _attrs(
                            {
                                ":job": job.job_id,
                                ":m": entry.month,
                                ":x": entry.charged_micros,
                                ":at": iso(entry.recorded_at),
                            }
                        ),
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                }
            )
        try:
            self._transact(items)
        except ClientError as exc:
            codes = _cancellation_codes(exc)
            if "ConditionalCheckFailed" not in codes:
                raise
            # The job's own condition first: a job settled already is a repeat, whatever else failed.
            if entry is not None and codes[0] != "ConditionalCheckFailed" and codes[-1] == "ConditionalCheckFailed":
                holder = _plain(_cancellation_item(exc, len(items) - 1) or {}).get("job_id")
                raise TaskAlreadyCharged(entry.task_id, str(holder) if holder else None) from exc
            raise StaleTransition(f"{job.job_id} was settled already") from exc

    def take_rate_slot(self, name: str, current: int) -> int:
        """The next free slot of a shared rate, ``current`` or later; each slot is handed out once.

        One conditional write when no slot ahead is taken, else a second that takes the next in line.
        The counter only moves forward, so two callers never get the same slot.
        """
        key = {"pk": {"S": f"RATE#{name}"}}
        try:
            self._client.update_item(
                TableName=self._jobs,
                Key=key,
                UpdateExpression="SET next_slot = :after",
                ConditionExpression="attribute_not_exists(next_slot) OR next_slot <= :current",
                ExpressionAttributeValues={":after": {"N": str(current + 1)}, ":current": {"N": str(current)}},
            )
            return current
        except ClientError as exc:
            if not _is_conditional_failure(exc):
                raise
        answer = self._client.update_item(
            TableName=self._jobs,
            Key=key,
            UpdateExpression="ADD next_slot :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_OLD",
        )
        return int(answer["Attributes"]["next_slot"]["N"])

    # ---- helpers -----------------------------------------------------------------------
    def _transact(self, items: list[TransactWriteItemTypeDef], attempts: int = 6) -> None:
        """Every money movement touches the month's total row, so concurrent ones can conflict: retry those."""
        for attempt in range(attempts):
            try:
                self._client.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                codes = _cancellation_codes(exc)
                if "TransactionConflict" not in codes or "ConditionalCheckFailed" in codes or attempt == attempts - 1:
                    raise
            time.sleep(random.uniform(0.02, 0.1) * 2**attempt)

    def _job_item(self, job: Job) -> dict[str, Any]:
        return _attrs(
            {"pk": f"JOB#{job.job_id}", **_document(job), TOKEN_DIGEST_ATTRIBUTE: token_digest(job.webhook_token)}
        )

    @staticmethod
    def _job_or_none(item: Mapping[str, Any] | None) -> Job | None:
        return Job.model_validate(_plain(item)) if item else None

    @staticmethod
    def _narrow_failure(condition: str, values: dict[str, Any], only_if_failure: Collection[FailureKind] | None) -> str:
        """A move out of FAILED only for failures of these kinds."""
        if not only_if_failure:
            return condition
        values[":failed"] = {"S": JobStatus.FAILED.value}
        kinds = sorted(kind.value for kind in only_if_failure)
        for index, kind in enumerate(kinds):
            values[f":fk{index}"] = {"S": kind}
        listed = ", ".join(f":fk{index}" for index in range(len(kinds)))
        return f"({condition} AND (#status <> :failed OR failure_kind IN ({listed})))"

    @staticmethod
    def _update_parts(
        to: JobStatus, from_statuses: Iterable[JobStatus], changes: Mapping[str, Any]
    ) -> tuple[str, str, dict[str, str], dict[str, Any]]:
        now = iso(utc_now())
        fields: dict[str, Any] = {"status": to.value, "status_since": now, **changes}
        sets: list[str] = []
        removes: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        if to in TIMED_STATUSES:
            # When the job first reached this status, for its timeline; a later move into it keeps the first.
            names["#reached"] = f"{to.value}_at"
            values[":reached"] = {"S": now}
            sets.append("#reached = if_not_exists(#reached, :reached)")
        for index, (name, value) in enumerate(fields.items()):
            names[f"#f{index}"] = name
            if value is None:
                removes.append(f"#f{index}")
                continue
            sets.append(f"#f{index} = :v{index}")
            values[f":v{index}"] = _serializer.serialize(_dynamo_value(value))
        condition_values = []
        for index, status in enumerate(from_statuses):
            values[f":from{index}"] = {"S": status.value}
            condition_values.append(f":from{index}")
        names["#status"] = "status"
        condition = f"#status IN ({', '.join(condition_values)})"
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        return expression, condition, names, values
