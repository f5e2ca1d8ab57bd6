"""Every AWS call each local function makes, named by the template's logical ids.

The functions share one process here, so a call is attributed through a context variable that
``LocalFunction`` sets around each invocation; the threads boto3's transfer manager starts for a
multipart upload inherit it. Resource names are recorded as the template's logical ids (the
local physical names differ from a deployment's), so the least-privilege check can rebuild each
resource's ARN as a deployment would name it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from s3transfer.futures import BoundedExecutor

from infinitetalk_core import clients

_P = ParamSpec("_P")
_T = TypeVar("_T")

# The logical id of the function whose invocation is running in this context, if any.
running_function: contextvars.ContextVar[str | None] = contextvars.ContextVar("running_function", default=None)

# Physical name (bucket, table, queue URL, secret ARN, bus name ...) -> logical id, from every provisioned stack.
_logical_ids: dict[str, str] = {}
_logical_ids_lock = threading.Lock()

# Request fields that name what a call touches; everything else (bodies, expressions) is not kept.
_NAMING_FIELDS = ("Bucket", "Key", "Prefix", "TableName", "IndexName", "QueueUrl", "SecretId", "TopicArn")


def learn_resource_names(physical: Mapping[str, Any]) -> None:
    """Remember how a provisioned stack named each resource (``Template.physical``)."""
    with _logical_ids_lock:
        for logical_id, made in physical.items():
            for name in (made.ref, *made.attributes.values()):
                _logical_ids[str(name)] = logical_id


def logical_name(name: str) -> str:
    """``@LogicalId`` for a name a provisioned stack gave; other names pass through unchanged."""
    return f"@{_logical_ids[name]}" if name in _logical_ids else name


@dataclass(frozen=True)
class RecordedCall:
    """One call: who made it, what it was, what it named (logical ids as ``@Id``) and its HTTP status."""

    function: str | None
    thread: str
    on_main_thread: bool
    service: str
    operation: str
    target: Mapping[str, Any]
    status: int | None
    presigned: bool = False


def call_target(params: Mapping[str, Any]) -> dict[str, Any]:
    """The naming fields of a request, physical names replaced by logical ids."""
    target: dict[str, Any] = {}
    for name in _NAMING_FIELDS:
        value = params.get(name)
        if isinstance(value, str):
            target[name] = value if name in {"Key", "Prefix"} else logical_name(value)
    if "TransactItems" in params:
        target["TransactItems"] = [
            {kind: {"TableName": logical_name(str(body.get("TableName", "")))} for kind, body in item.items()}
            for item in params["TransactItems"]
        ]
    if "RequestItems" in params:
        target["RequestItems"] = sorted(logical_name(str(table)) for table in params["RequestItems"])
    if "Entries" in params:
        target["Entries"] = [
            {"EventBusName": logical_name(str(entry.get("EventBusName", "default")))} for entry in params["Entries"]
        ]
    return target


class _ContextCarryingPool(ThreadPoolExecutor):
    """A thread pool whose tasks run in the submitter's context, so uploads stay attributed."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)  # type: ignore[arg-type]


class CallRecorder:
    """``with CallRecorder() as recorder:`` records the shared clients' calls until the block ends."""

    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []
        self._lock = threading.Lock()
        self._undo: Callable[[], None] | None = None
        self._executor_class: Any = None

    def observe(self, call: clients.AwsCall) -> None:
        recorded = RecordedCall(
            function=running_function.get(),
            thread=threading.current_thread().name,
            on_main_thread=threading.current_thread() is threading.main_thread(),
            service=call.service,
            operation=call.operation,
            target=call_target(call.params),
            status=call.status,
            presigned=call.presigned,
        )
        with self._lock:
            self.calls.append(recorded)

    def __enter__(self) -> CallRecorder:
        self._undo = clients.observe_calls(self.observe)
        self._executor_class = BoundedExecutor.EXECUTOR_CLS
        BoundedExecutor.EXECUTOR_CLS = _ContextCarryingPool
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None
        if self._executor_class is not None:
            BoundedExecutor.EXECUTOR_CLS = self._executor_class
            self._executor_class = None

    def by_function(self) -> dict[str, list[RecordedCall]]:
        with self._lock:
            calls = list(self.calls)
        grouped: dict[str, list[RecordedCall]] = {}
        for call in calls:
            if call.function is not None:
                grouped.setdefault(call.function, []).append(call)
        return grouped

    def unattributed_from_function_threads(self) -> list[RecordedCall]:
        """Calls off the test's own thread that no invocation claimed: a thread that lost its context."""
        with self._lock:
            return [c for c in self.calls if c.function is None and not c.on_main_thread]


@contextmanager
def invocation_of(function_logical_id: str) -> Iterator[None]:
    """Attribute the calls made inside the block to one function."""
    token = running_function.set(function_logical_id)
    try:
        yield
    finally:
        running_function.reset(token)
