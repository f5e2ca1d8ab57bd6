"""Faults the local stack injects into the functions' own calls, and the rule that a dead invocation sends nothing.

Everything is done from outside the core: botocore event hooks, registered on boto3's default
session before the functions' clients are built (so every client inherits them), and a wrapper
around httpx's transport. Both act only inside an invocation (``runtime.current_invocation``), so
the tests' and the stack's own calls are never touched, and both first refuse any call of an
invocation that was given up on (timed out or crashed): that is how a thread that cannot be killed
is kept from committing anything more.

The faults, each from a generator seeded by ``seed``:

- DynamoDB transaction conflicts: a ``TransactWriteItems`` answered ``TransactionCanceledException``
  with ``TransactionConflict`` reasons, without being sent (so nothing of it was applied);
- DynamoDB throttling: any DynamoDB call answered ``ProvisionedThroughputExceededException``, which
  botocore retries with its own backoff, as it would in AWS;
- crashes at named step boundaries (``CRASH_POINTS``): the invocation ends there, as a crashed
  runtime would, and its messages come back;
- repeated S3 events: each fresh inbox event delivered ``s3_event_copies`` times, half of the copies
  at once (beside the original) and the rest within ``s3_event_copy_spread_seconds`` (see ``SqsPoller``).

The local stack also makes moto's DynamoDB answer one request at a time: DynamoDB's conditional
writes and transactions are atomic, moto's are not when two threads interleave, and the pipeline's
correctness (one job per drop, one task per job) rests on that atomicity.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
from botocore.awsrequest import AWSResponse

from infinitetalk_core.models import ModelName

from .runtime import current_invocation

CRASH_POINTS: dict[str, str] = {
    "after_job_write": "after a write to the jobs table was answered, before the step that follows it "
    "(the SQS send of a fetch or a re-check, the event, the next record)",
    "after_charge": "after the transaction that writes a ledger line and moves the month's totals was answered, "
    "before the job's event is published",
    "mid_upload": "before a multipart upload's second part or its completion is sent: the parts so far stay, "
    "the object never appears",
    "after_submit": "after WaveSpeed answered a submit POST, before the answer is read: a task exists that no "
    "job row names",
}
_PARAMS = "local_stack_params"
_DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})
_MODEL_PATHS = tuple(f"/{model.value}" for model in ModelName)


@dataclass
class LocalFaults:
    """The knobs; every one defaults to "no fault" and may be turned while the stack runs."""

    seed: int = 0
    transaction_conflict_rate: float = 0.0
    throttle_rate: float = 0.0
    # Crash point name -> the share of the calls there that crash; ``crash_next`` forces the next ones.
    crash_rates: dict[str, float] = field(default_factory=dict)
    crash_next: dict[str, int] = field(default_factory=dict)
    # Crash only invocations of these functions (logical ids, e.g. "CallbackFunction"); empty: any.
    crash_functions: set[str] = field(default_factory=set)
    s3_event_copies: int = 1
    s3_event_copy_spread_seconds: int = 5
    # A WaveSpeed submit POST waits this long before it is sent (a hung submission, for time-out tests).
    submit_post_delay_seconds: float = 0.0
    injected: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _rng: random.Random | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.check_points(self.crash_rates)
        self.check_points(self.crash_next)

    @staticmethod
    def check_points(points: Iterable[str]) -> None:
        unknown = sorted(set(points) - set(CRASH_POINTS))
        if unknown:
            raise ValueError(f"no crash point {', '.join(unknown)}; the points are {', '.join(CRASH_POINTS)}")

    def _random(self) -> float:
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng.random()

    def draw(self, rate: float, name: str) -> bool:
        with self._lock:
            hit = rate > 0 and self._random() < rate
            if hit:
                self.injected[name] += 1
            return hit

    def crash_due(self, point: str, function: str) -> bool:
        with self._lock:
            if self.crash_functions and function not in self.crash_functions:
                return False
            pending = self.crash_next.get(point, 0)
            if pending > 0:
                self.crash_next[point] = pending - 1
                hit = True
            else:
                rate = self.crash_rates.get(point, 0.0)
                hit = rate > 0 and self._random() < rate
            if hit:
                self.injected[f"crash:{point}"] += 1
            return hit

    def count(self, name: str) -> None:
        with self._lock:
            self.injected[name] += 1

    def reset(self) -> None:
        """Back to no faults, in place (the stack's pollers and functions hold this object)."""
        with self._lock:
            self.transaction_conflict_rate = 0.0
            self.throttle_rate = 0.0
            self.crash_rates.clear()
            self.crash_next.clear()
            self.crash_functions.clear()
            self.s3_event_copies = 1
            self.submit_post_delay_seconds = 0.0


# ---- botocore ---------------------------------------------------------------------------------
class _Body:
    """The raw stream an ``AWSResponse`` reads its content from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterable[bytes]:
        yield self._body


def dynamodb_error(request: Any, code: str, message: str, extra: Mapping[str, Any] | None = None) -> AWSResponse:
    """An error answer exactly as DynamoDB sends one, parsed and retried by botocore as the real one would be."""
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **(extra or {})})
    headers = {"content-type": "application/x-amz-json-1.0", "x-amzn-requestid": f"local-fault-{time.time_ns()}"}
    return AWSResponse(request.url, 400, cast(Any, headers), _Body(body.encode()))


def transaction_conflict(request: Any) -> AWSResponse:
    try:
        items = len(json.loads(request.body or b"{}").get("TransactItems", [])) or 1
    except ValueError:
        items = 1
    reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}]
    reasons += [{"Code": "None"}] * (items - 1)
    message = "Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict]"
    return dynamodb_error(request, "TransactionCanceledException", message, {"CancellationReasons": reasons})


def throttled(request: Any) -> AWSResponse:
    message = "The level of configured provisioned throughput for the table was exceeded (injected)"
    return dynamodb_error(request, "ProvisionedThroughputExceededException", message)


def _keys_of(params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The keys (or whole items) a DynamoDB write names, in the request's own attribute-value form."""
    found: list[Mapping[str, Any]] = []
    for source in (params, *(body for item in params.get("TransactItems", []) for body in item.values())):
        for name in ("Key", "Item"):
            value = source.get(name)
            if isinstance(value, Mapping):
                found.append(value)
    return found


def _text(key: Mapping[str, Any], name: str) -> str:
    value = key.get(name)
    return str(value.get("S", "")) if isinstance(value, Mapping) else ""


def writes_job_row(params: Mapping[str, Any]) -> bool:
    return any(_text(key, "pk").startswith("JOB#") for key in _keys_of(params))


def writes_ledger_line(params: Mapping[str, Any]) -> bool:
    return any(_text(key, "sk").startswith("ENTRY#") for key in _keys_of(params))


def _remember_params(params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
    if current_invocation.get() is not None:
        context[_PARAMS] = params


def _before_send(request: Any, event_name: str, **_: Any) -> AWSResponse | None:
    invocation = current_invocation.get()
    if invocation is None:
        return None
    invocation.check()
    faults = invocation.faults
    if faults is None:
        return None
    _hook, service, operation = [*event_name.split(".", 2), "", ""][:3]
    if service == "dynamodb":
        if operation == "TransactWriteItems" and faults.draw(faults.transaction_conflict_rate, "transaction_conflict"):
            return transaction_conflict(request)
        if faults.draw(faults.throttle_rate, "throttle"):
            return throttled(request)
    elif service == "s3" and operation in {"UploadPart", "CompleteMultipartUpload"}:
        part = parse_qs(urlsplit(str(request.url)).query).get("partNumber", ["1"])[0]
        if (operation == "CompleteMultipartUpload" or part != "1") and faults.crash_due(
            "mid_upload", invocation.function
        ):
            invocation.crash("mid_upload")
    return None


def _after_call(http_response: Any, context: dict[str, Any], event_name: str, **_: Any) -> None:
    invocation = current_invocation.get()
    params = context.pop(_PARAMS, None)
    if invocation is None or invocation.faults is None or params is None or http_response is None:
        return
    if int(http_response.status_code) >= 300:
        return
    _hook, service, operation = [*event_name.split(".", 2), "", ""][:3]
    if service != "dynamodb" or operation not in _DYNAMODB_WRITES:
        return
    if writes_ledger_line(params) and invocation.faults.crash_due("after_charge", invocation.function):
        invocation.crash("after_charge")
    if writes_job_row(params) and invocation.faults.crash_due("after_job_write", invocation.function):
        invocation.crash("after_job_write")


_hooked_sessions: list[Any] = []


def hook_boto3() -> None:
    """Register the hooks on boto3's default session (once each), before the functions' clients exist."""
    session = boto3._get_default_session()
    if any(hooked is session for hooked in _hooked_sessions):
        return
    events = session.events
    events.register("provide-client-params", _remember_params, unique_id="local-stack-params")
    events.register("before-send", cast(Any, _before_send), unique_id="local-stack-before-send")
    # Last, so the call recorder sees a write that happened before its invocation crashes.
    events.register_last("after-call", _after_call, unique_id="local-stack-after-call")
    _hooked_sessions.append(session)


# ---- httpx: the WaveSpeed client and output downloads -----------------------------------------
_original_handle_request: Callable[[httpx.HTTPTransport, httpx.Request], httpx.Response] | None = None


def _is_submit(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith(_MODEL_PATHS)


def _guarded_handle_request(transport: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
    assert _original_handle_request is not None
    invocation = current_invocation.get()
    if invocation is None:
        return _original_handle_request(transport, request)
    invocation.check()
    faults = invocation.faults
    submit = _is_submit(request)
    if faults is not None and submit and faults.submit_post_delay_seconds > 0:
        time.sleep(faults.submit_post_delay_seconds)
        invocation.check()
    response = _original_handle_request(transport, request)
    if (
        faults is not None
        and submit
        and response.status_code < 300
        and faults.crash_due("after_submit", invocation.function)
    ):
        response.close()
        invocation.crash("after_submit")
    return response


def hook_httpx() -> None:
    """Wrap httpx's transport (once): an abandoned invocation's requests are refused, and submits can crash."""
    global _original_handle_request
    if _original_handle_request is not None:
        return
    _original_handle_request = httpx.HTTPTransport.handle_request
    httpx.HTTPTransport.handle_request = _guarded_handle_request  # type: ignore[method-assign,assignment]


# ---- moto -------------------------------------------------------------------------------------
_dynamodb_turn = threading.RLock()
_moto_serialized = False


def serialize_moto_dynamodb() -> None:
    """One DynamoDB request at a time inside moto's server, as atomic as DynamoDB's own conditional writes."""
    global _moto_serialized
    if _moto_serialized:
        return
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _dynamodb_turn:
            return original(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _moto_serialized = True


_copying = threading.local()


def _table_copies_skipped() -> bool:
    return bool(getattr(_copying, "skip", False))


def light_moto_transactions() -> None:
    """moto's transactions copy every table they touch, whole, to roll back: time and memory grow with the table.

    Each transaction here keeps only the items it names, as they were, and puts those back when it is
    cancelled; moto's own rollback (reassigning the table copies) then reassigns the tables themselves.
    Safe because moto's DynamoDB answers one request at a time (``serialize_moto_dynamodb``).
    """
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    if getattr(DynamoDBBackend.transact_write_items, "local_stack_light", False):
        return

    class NoTableCopies:
        """``copy`` as moto's DynamoDB module sees it: a table is not copied while a transaction runs."""

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            if isinstance(value, Table) and _table_copies_skipped():
                return value
            return copy.deepcopy(value, memo)

    models.copy = NoTableCopies()  # type: ignore[attr-defined,assignment]
    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for item in transact_items[:100]:
            _, op = next(iter(item.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            attrs = op.get("Item") or {}
            key = op.get("Key") or {
                name: attrs[name] for name in (table.hash_key_attr, table.range_key_attr) if name and name in attrs
            }
            try:
                current = self.get_item(table.name, key)
            except Exception:  # noqa: BLE001, S112 - a malformed key: moto refuses the transaction itself
                continue
            saved.append((table.name, key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
        _copying.skip = True
        try:
            original(self, transact_items)
        except BaseException:
            for table_name, key, attrs in reversed(saved):
                if attrs is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attrs)
            raise
        finally:
            _copying.skip = False

    transact_write_items.local_stack_light = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def speed_up_moto() -> None:
    """Two costs of moto's server that grow with a long run, removed without changing what it answers.

    Every request looked up moto's own package folder on disk (under the server's one lock), and
    every receive worked out the time anew, through datetime arithmetic, for each queued message.
    """
    from moto import backends
    from moto.sqs import models as sqs_models

    if getattr(backends.list_of_moto_modules, "local_stack_cached", False):
        return
    modules = tuple(backends.list_of_moto_modules())

    def list_of_moto_modules() -> tuple[str, ...]:
        return modules

    list_of_moto_modules.local_stack_cached = True  # type: ignore[attr-defined]
    backends.list_of_moto_modules = list_of_moto_modules
    exact = sqs_models.unix_time_millis  # type: ignore[attr-defined]

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else float(exact(dt))

    sqs_models.unix_time_millis = unix_time_millis  # type: ignore[attr-defined]


def install() -> None:
    """Everything above, idempotently; every hook is a no-op outside an invocation of a local function."""
    hook_boto3()
    hook_httpx()
    serialize_moto_dynamodb()
    light_moto_transactions()
    speed_up_moto()
