"""The functions of ``functions/`` run as Lambda would run them: same handlers, same event shapes.

Each function has execution environments of its own (its handler module loaded afresh, its own
pipeline), as many at once as the template allows: an SQS event source's ``MaximumConcurrency``,
``ReservedConcurrentExecutions``, else the stack's cap. An invocation runs on a thread of its own and
is given up on at its function's timeout: the invoker moves on at once (an SQS batch is left to come
back after its visibility timeout), the environment is thrown away, and every later AWS or WaveSpeed
call from that thread is refused before it leaves the process (see ``faults``). A Python thread
cannot be killed, so what it still does is computing, logging and finishing the one request it may
have had in flight when time ran out; the same holds for an invocation crashed on purpose.

SQS-triggered functions get genuine SQS batch events from a poller that receives a batch only when
an environment is free, deletes what succeeded and lets the rest come back (and reach the
dead-letter queue after the template's ``maxReceiveCount``); the HTTP API route is a real local HTTP
endpoint that turns requests into API Gateway payload-2.0 events; scheduled functions run on a timer.
"""

from __future__ import annotations

import base64
import contextvars
import importlib.util
import itertools
import json
import random
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlsplit

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from infinitetalk_core import pipeline, settings

from .calls import invocation_of
from .template import ACCOUNT_ID, FunctionSpec

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

    from .faults import LocalFaults

Handler = Callable[[dict[str, Any], Any], Any]
Log = Callable[[str, str], None]
_P = ParamSpec("_P")
_T = TypeVar("_T")


# ---- one invocation ---------------------------------------------------------------------------
class InvocationAbandoned(Exception):
    """Raised in a timed-out or crashed invocation's thread at its next AWS or WaveSpeed call: it sends nothing."""


class FunctionTimedOut(Exception):
    """The invocation ran past its function's timeout; Lambda reports it as a function error."""


class FunctionCrashed(Exception):
    """The invocation's environment died on purpose (a crash point): a function error, as a crashed runtime is."""


class FunctionThrottled(Exception):
    """Every environment the function may have is busy (its concurrency limit), and the caller would not wait."""


@dataclass
class Invocation:
    """What one invocation's thread (and the threads it hands work to) know about it."""

    function: str  # the template's logical id
    label: str  # the environment's name, the log's source column
    faults: LocalFaults | None
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ended: threading.Event = field(default_factory=threading.Event)
    abandoned_because: str | None = None
    # Powertools state Lambda keeps per process and so, here, per invocation (see ``scope_powertools``).
    scoped: dict[int, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def finish(self) -> None:
        self.ended.set()

    def abandon(self, reason: str) -> bool:
        """Give the invocation up (timeout, crash); False if it had already finished or been given up."""
        with self._lock:
            if self.ended.is_set() or self.abandoned_because is not None:
                return False
            self.abandoned_because = reason
        self.ended.set()
        return True

    def check(self) -> None:
        """Called before any request leaves the process on this invocation's behalf."""
        if self.abandoned_because is not None:
            raise InvocationAbandoned(f"{self.label} {self.request_id[:8]}: {self.abandoned_because}; call not sent")

    def crash(self, point: str) -> None:
        """End the invocation here, as a crashed runtime would: nothing after this point reaches anything."""
        self.abandon(f"crashed at {point} (injected)")
        raise InvocationAbandoned(f"{self.label} {self.request_id[:8]}: crashed at {point} (injected)")


# The invocation running in this context; the threads boto3's transfer manager starts inherit it.
current_invocation: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "current_invocation", default=None
)


class ContextCarryingPool(ThreadPoolExecutor):
    """A thread pool whose tasks run in the submitter's context, so an upload's parts belong to its invocation."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)  # type: ignore[arg-type]


# ---- Powertools state, per invocation ---------------------------------------------------------
class InvocationScopedDict(MutableMapping[str, Any]):
    """A dict that is the invocation's own inside an invocation, and one shared dict outside any.

    In Lambda one process runs one invocation at a time, so Powertools keeps the logger's keys and
    the metrics being gathered in module-level objects; here several invocations share a process.
    """

    def __init__(self, shared: dict[str, Any], inherit: bool) -> None:
        self._shared = shared
        self._inherit = inherit  # an invocation starts from a copy of the shared dict, or empty

    def _data(self) -> dict[str, Any]:
        invocation = current_invocation.get()
        if invocation is None:
            return self._shared
        data: dict[str, Any] | None = invocation.scoped.get(id(self))
        if data is None:
            data = dict(self._shared) if self._inherit else {}
            invocation.scoped[id(self)] = data
        return data

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data()))

    def __len__(self) -> int:
        return len(self._data())

    def clear(self) -> None:
        self._data().clear()


class InvocationScopedFormatter(LambdaPowertoolsFormatter):
    """Powertools' formatter whose keys (request id, cold start ...) are each invocation's own."""

    @property
    def log_format(self) -> dict[str, Any]:
        invocation = current_invocation.get()
        shared: dict[str, Any] = self.__dict__.setdefault("_shared_log_format", {})
        if invocation is None:
            return shared
        own: dict[str, Any] | None = invocation.scoped.get(id(self))
        if own is None:
            own = invocation.scoped[id(self)] = dict(shared)
        return own

    @log_format.setter
    def log_format(self, value: dict[str, Any]) -> None:
        invocation = current_invocation.get()
        if invocation is None:
            self.__dict__["_shared_log_format"] = value
        else:
            invocation.scoped[id(self)] = value


def scope_metrics(metrics: Metrics) -> Callable[[], None]:
    """Make the metrics each invocation gathers its own; returns the undo."""
    provider: Any = metrics.provider
    saved = {name: getattr(provider, name) for name in ("metric_set", "dimension_set", "metadata_set")}
    provider.metric_set = InvocationScopedDict(saved["metric_set"], inherit=False)
    provider.dimension_set = InvocationScopedDict(saved["dimension_set"], inherit=True)
    provider.metadata_set = InvocationScopedDict(saved["metadata_set"], inherit=False)

    def undo() -> None:
        for name, value in saved.items():
            setattr(provider, name, value)

    return undo


# ---- functions and their environments ---------------------------------------------------------
@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    timeout_seconds: float
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000))


@dataclass
class Environment:
    """One execution environment: the handler module loaded afresh, so its globals are its own."""

    label: str
    handler: Handler


@dataclass
class InvocationCounts:
    """What happened to a function's invocations, for reports."""

    invocations: int = 0
    errors: int = 0
    timeouts: int = 0
    crashes: int = 0
    throttles: int = 0
    environments: int = 0
    peak_concurrency: int = 0


class LocalFunction:
    """One function: up to ``concurrency`` invocations at once, each past ``timeout_seconds`` given up on."""

    def __init__(
        self,
        spec: FunctionSpec,
        log: Log,
        concurrency: int = 1,
        timeout_seconds: float | None = None,
        faults: LocalFaults | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.short_name
        self.concurrency = max(1, concurrency)
        self.timeout_seconds = float(timeout_seconds if timeout_seconds is not None else spec.timeout)
        self.faults = faults
        self.counts = InvocationCounts()
        self._log = log
        self.slots = threading.BoundedSemaphore(self.concurrency)
        self._lock = threading.Lock()
        self._idle: list[Environment] = []
        self._numbers = itertools.count(1)
        self._running = 0
        first = self._new_environment()
        self._idle.append(first)
        self._handler: Handler = first.handler  # the first environment's, for tests that look inside

    def _new_environment(self) -> Environment:
        number = next(self._numbers)
        module_name, _, attribute = self.spec.handler.rpartition(".")
        module = self._load(module_name, number)
        self._own_cold_start(module)
        with self._lock:
            self.counts.environments += 1
        label = self.name if number == 1 else f"{self.name}-{number}"
        return Environment(label=label, handler=getattr(module, attribute))

    @staticmethod
    def _own_cold_start(module: ModuleType) -> None:
        """In Lambda each environment is its own process: give this one its own pipeline.

        Its clients and its cached secrets are then its own, so one function's cached secret never
        hides another function's read of it, and the recorded calls are each function's own.
        """
        if getattr(module, "get_pipeline", None) is pipeline.get_pipeline:
            vars(module)["get_pipeline"] = cache(lambda: pipeline.build_pipeline(settings.get_settings()))

    def _load(self, module_name: str, number: int) -> ModuleType:
        path = self.spec.code_dir / f"{module_name.replace('.', '/')}.py"
        loaded = importlib.util.spec_from_file_location(f"local_function_{self.name}_{number}_{module_name}", path)
        if loaded is None or loaded.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
        return module

    def _checkout(self) -> Environment:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._new_environment()

    def invoke(self, event: dict[str, Any], *, wait_for_slot: float | None = None, holds_slot: bool = False) -> Any:
        """Run one invocation; raises what the handler raises (a function error), ``FunctionTimedOut``,
        ``FunctionCrashed``, or ``FunctionThrottled`` when no environment frees up within ``wait_for_slot``.

        ``holds_slot``: the caller already took one of ``slots`` (a poller does, before it receives).
        """
        if not holds_slot:
            acquired = self.slots.acquire() if wait_for_slot is None else self.slots.acquire(timeout=wait_for_slot)
            if not acquired:
                with self._lock:
                    self.counts.throttles += 1
                raise FunctionThrottled(f"{self.name}: all {self.concurrency} environments are busy")
        try:
            return self._run(event)
        finally:
            if not holds_slot:
                self.slots.release()

    def _run(self, event: dict[str, Any]) -> Any:
        environment = self._checkout()
        invocation = Invocation(function=self.spec.logical_id, label=environment.label, faults=self.faults)
        outcome: dict[str, Any] = {}
        context = LambdaContext(
            function_name=self.name, timeout_seconds=self.timeout_seconds, aws_request_id=invocation.request_id
        )

        def run() -> None:
            current_invocation.set(invocation)
            with invocation_of(self.spec.logical_id):
                try:
                    outcome["value"] = environment.handler(event, context)
                except Exception as exc:  # noqa: BLE001 - handed to the invoker, as Lambda reports a function error
                    outcome["error"] = exc
                    if invocation.abandoned_because is None:
                        self._log(environment.label, "function error:\n" + traceback.format_exc().rstrip())
                finally:
                    invocation.finish()

        with self._lock:
            self.counts.invocations += 1
            self._running += 1
            self.counts.peak_concurrency = max(self.counts.peak_concurrency, self._running)
        try:
            worker = threading.Thread(
                target=contextvars.copy_context().run, args=(run,), name=environment.label, daemon=True
            )
            worker.start()
            if not invocation.ended.wait(self.timeout_seconds) and invocation.abandon("timed out"):
                with self._lock:
                    self.counts.timeouts += 1
                self._log(
                    environment.label,
                    f"invocation {invocation.request_id} timed out after {self.timeout_seconds:g} s: given up on; "
                    "its calls from now on are refused",
                )
                raise FunctionTimedOut(f"{self.name}: task timed out after {self.timeout_seconds:g} s")
            if invocation.abandoned_because is not None:
                with self._lock:
                    self.counts.crashes += 1
                self._log(environment.label, f"invocation {invocation.request_id} {invocation.abandoned_because}")
                raise FunctionCrashed(f"{self.name}: {invocation.abandoned_because}")
        finally:
            with self._lock:
                self._running -= 1
        with self._lock:
            self._idle.append(environment)  # only an environment that finished is used again
            if "error" in outcome:
                self.counts.errors += 1
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")


class StoppableThread(threading.Thread):
    def __init__(self, name: str, target: Callable[[threading.Event], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.stopping = threading.Event()
        self._loop = target

    def run(self) -> None:
        self._loop(self.stopping)

    def stop(self) -> None:
        self.stopping.set()


# ---- event sources ----------------------------------------------------------------------------
COPY_ATTRIBUTE = "LocalStackCopyOf"


class SqsPoller:
    """An event source mapping: batches from the queue to the function, partial failures honoured.

    A batch is received only when one of the function's environments is free, and runs on a worker
    of its own, so up to ``function.concurrency`` batches run at once. A batch whose invocation timed
    out is left alone (its messages come back after the queue's visibility timeout, as in Lambda);
    one that failed comes back after ``retry_after_seconds``.
    """

    def __init__(
        self,
        function: LocalFunction,
        sqs: SQSClient,
        queue_url: str,
        queue_arn: str,
        batch_size: int,
        retry_after_seconds: int,
        region: str,
        partial_failures: bool = True,
        faults: LocalFaults | None = None,
    ) -> None:
        self.function = function
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.batch_size = min(10, batch_size)
        # Without ReportBatchItemFailures, Lambda ignores the answer: only a raise fails the batch.
        self.partial_failures = partial_failures
        self.retry_after_seconds = retry_after_seconds
        self.region = region
        self.faults = faults
        self.thread = StoppableThread(f"poll-{function.name}", self._run)
        self._workers = ThreadPoolExecutor(max_workers=function.concurrency, thread_name_prefix=f"esm-{function.name}")
        self._random = random.Random(0)
        # Messages of batches whose invocation timed out, and those of them received again since.
        self.timed_out: set[str] = set()
        self.received_again: set[str] = set()

    def _run(self, stopping: threading.Event) -> None:
        try:
            while not stopping.is_set():
                if not self.function.slots.acquire(timeout=0.5):
                    continue
                try:
                    messages = self._receive(wait_seconds=1)
                except Exception:  # noqa: BLE001 - a poller outlives any one bad call, as the real one does
                    self.function.slots.release()
                    if not stopping.is_set():
                        self.function._log(self.function.name, "poller error:\n" + traceback.format_exc().rstrip())
                        stopping.wait(1)
                    continue
                if not messages:
                    self.function.slots.release()
                    continue
                self._workers.submit(self._handle_holding_slot, messages)
        finally:
            self._workers.shutdown(wait=True)  # a stopped poller has no batch left running

    def _handle_holding_slot(self, messages: list[MessageTypeDef]) -> None:
        try:
            self._handle(messages, holds_slot=True)
        except Exception:  # noqa: BLE001 - the messages come back by themselves
            self.function._log(self.function.name, "poller error:\n" + traceback.format_exc().rstrip())
        finally:
            self.function.slots.release()

    def poll_once(self, wait_seconds: int = 0) -> int:
        """Receive one batch and run it on this thread (for tests that step the pipeline by hand)."""
        messages = self._receive(wait_seconds)
        if messages:
            self._handle(messages, holds_slot=False)
        return len(messages)

    def _receive(self, wait_seconds: int) -> list[MessageTypeDef]:
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = answer.get("Messages", [])
        for message in messages:
            if message["MessageId"] in self.timed_out:
                self.received_again.add(message["MessageId"])
            self._deliver_again(message)
        return messages

    def _deliver_again(self, message: MessageTypeDef) -> None:
        """At least once, for real: a fresh S3 event is sent again, some copies at once, some a little later."""
        copies = self.faults.s3_event_copies if self.faults is not None else 1
        if copies <= 1 or COPY_ATTRIBUTE in message.get("MessageAttributes", {}):
            return
        if message.get("Attributes", {}).get("ApproximateReceiveCount", "1") != "1":
            return
        try:
            records = json.loads(message["Body"]).get("Records", [])
        except (ValueError, AttributeError):
            return
        if not records or not all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records):
            return
        assert self.faults is not None
        spread = max(0, int(self.faults.s3_event_copy_spread_seconds))
        for index in range(copies - 1):
            # The first half at once (they run beside the original), the rest spread over a few seconds.
            delay = 0 if index < copies // 2 else self._random.randint(1, max(1, spread))
            self.sqs.send_message(
                QueueUrl=self.queue_url,
                MessageBody=message["Body"],
                DelaySeconds=delay,
                MessageAttributes={COPY_ATTRIBUTE: {"DataType": "String", "StringValue": message["MessageId"]}},
            )
            self.faults.count("s3_event_copy")

    def _handle(self, messages: list[MessageTypeDef], holds_slot: bool) -> None:
        event = {"Records": [self._record(m) for m in messages]}
        try:
            response = self.function.invoke(event, holds_slot=holds_slot)
            reported = (response or {}).get("batchItemFailures", []) if self.partial_failures else []
            failed = {f["itemIdentifier"] for f in reported}
        except FunctionTimedOut:
            # Lambda leaves the batch alone: each message comes back after its visibility timeout.
            self.timed_out.update(m["MessageId"] for m in messages)
            return
        except Exception:  # noqa: BLE001 - the whole batch failed; SQS delivers it again
            failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        for index in range(0, len(done), 10):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[index:][:10])],
            )
        for message in messages:
            if message["MessageId"] in failed:
                # The queue's visibility timeout, shortened so a local retry takes seconds, not minutes.
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=self.retry_after_seconds,
                )

    def _record(self, message: MessageTypeDef) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}),
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }


class ScheduleTimer:
    """An EventBridge schedule rule: the function gets a ``Scheduled Event`` every interval.

    A tick that finds every environment busy (reconcile reserves one) is throttled and dropped,
    as Lambda drops it after its retries; the next tick comes anyway.
    """

    def __init__(self, function: LocalFunction, interval_seconds: float, region: str) -> None:
        self.function = function
        self.interval = interval_seconds
        self.region = region
        self.dropped_ticks = 0
        self.thread = StoppableThread(f"timer-{function.name}", self._run)
        self._ticks = ThreadPoolExecutor(max_workers=function.concurrency, thread_name_prefix=f"tick-{function.name}")

    def _run(self, stopping: threading.Event) -> None:
        try:
            while not stopping.wait(self.interval):
                if not self.function.slots.acquire(blocking=False):
                    self.dropped_ticks += 1
                    continue
                self._ticks.submit(self._tick)
        finally:
            self._ticks.shutdown(wait=True)

    def _tick(self) -> None:
        try:
            self.fire(holds_slot=True)
        except Exception:  # noqa: BLE001, S110 - already logged by the function; the schedule goes on
            pass
        finally:
            self.function.slots.release()

    def fire(self, holds_slot: bool = False) -> Any:
        return self.function.invoke(
            {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": ACCOUNT_ID,
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": self.region,
                "resources": [f"arn:aws:events:{self.region}:{ACCOUNT_ID}:rule/{self.function.name}-schedule"],
                "detail": {},
            },
            holds_slot=holds_slot,
        )


# API Gateway's payload limit for HTTP APIs: a larger request is answered 413 and reaches no function.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# A body declared larger than this is not even read before the answer (the client may see a reset).
MAX_DRAINED_BYTES = 4 * MAX_PAYLOAD_BYTES
CONTENT_LENGTH = re.compile(r"[0-9]{1,20}")
JSON_HEADERS = {"content-type": "application/json"}
NOT_FOUND = b'{"message":"Not Found"}'
TOO_LARGE = b'{"message":"Request Entity Too Large"}'
BAD_REQUEST = b'{"message":"Bad Request"}'


@dataclass
class HttpApiOptions:
    """How the local API hands bodies over; API Gateway may base64-encode any of them.

    ``rewrite_event`` stands for a front door that builds its events differently (tests use it to
    hand the function bodies no client could make API Gateway produce, such as a bad base64 flag).
    """

    base64_bodies: bool = False
    rewrite_event: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def query_parameters(query: str) -> dict[str, str]:
    """``queryStringParameters`` as API Gateway builds them: a repeated name's values joined with commas."""
    joined: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


def http_api_event(
    method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str, host: str, base64_body: bool
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) proxy event for one request."""
    parts = urlsplit(target)
    query = query_parameters(parts.query)
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    encoded = base64_body or text is None
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {parts.path}",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": method,
                "path": parts.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{method} {parts.path}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": base64.b64encode(body).decode() if encoded else text,
        "isBase64Encoded": encoded,
    }
    if query:
        event["queryStringParameters"] = query
    return event


class RequestTooLarge(Exception):
    """The body is over API Gateway's payload limit."""


class BadRequest(Exception):
    """The request's framing (its length or chunks) cannot be read."""


def read_body(request: BaseHTTPRequestHandler, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The request's body, by ``content-length`` or chunks, never more than ``limit`` bytes."""
    if "chunked" in (request.headers.get("transfer-encoding") or "").lower():
        return read_chunks(request.rfile, limit)
    declared = request.headers.get("content-length")
    if declared is None:
        return b""
    if not CONTENT_LENGTH.fullmatch(declared.strip()):
        raise BadRequest(f"content-length {declared[:40]!r}")
    length = int(declared)
    if length > limit:
        if length <= MAX_DRAINED_BYTES:
            # Read what the client sends, so that it reads the answer instead of a reset connection.
            while length > 0:
                chunk = request.rfile.read(min(length, 1024 * 1024))
                if not chunk:
                    break
                length -= len(chunk)
        raise RequestTooLarge
    return request.rfile.read(length)


def read_chunks(stream: Any, limit: int) -> bytes:
    body = bytearray()
    while True:
        size_line = stream.readline(1024).split(b";", 1)[0].strip()
        if not re.fullmatch(rb"[0-9a-fA-F]{1,8}", size_line):
            raise BadRequest("chunk size")
        size = int(size_line, 16)
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                continue  # trailers
            return bytes(body)
        if len(body) + size > limit:
            raise RequestTooLarge
        body += stream.read(size)
        stream.readline(1024)


class HttpApi:
    """The stack's HTTP API on 127.0.0.1: each route invokes its function with a proxy event.

    It answers as API Gateway's HTTP API does: any other method or path gets 404
    ``{"message":"Not Found"}`` (never 501), and a body over the 10 MB payload limit gets 413.
    """

    def __init__(self, routes: dict[tuple[str, str], LocalFunction], port: int = 0) -> None:
        self.routes = routes
        self.options = HttpApiOptions()
        api = self

        class RequestHandler(BaseHTTPRequestHandler):
            timeout = 30  # a client that stops sending gives its thread back

            def __getattr__(self, name: str) -> Any:
                # http.server answers 501 to a method without a do_ method: here every method has one.
                if name.startswith("do_"):
                    return lambda: api.handle(self, name[3:])
                raise AttributeError(name)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), RequestHandler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="http-api", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        # The target as sent: http.server collapses a leading '//' in ``request.path``; routes match exactly.
        parts = request.requestline.split(" ")
        target = parts[1] if len(parts) == 3 else request.path
        path = urlsplit(target).path if not target.startswith("//") else target.split("?", 1)[0]
        try:
            body = read_body(request)
        except RequestTooLarge:
            self._reply(request, 413, JSON_HEADERS, TOO_LARGE)
            return
        except BadRequest:
            self._reply(request, 400, JSON_HEADERS, BAD_REQUEST)
            return
        except OSError:
            return  # the client went away or stopped sending
        function = self.routes.get((method, path))
        if function is None:
            self._reply(request, 404, JSON_HEADERS, NOT_FOUND)
            return
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            lowered = key.lower()
            headers[lowered] = f"{headers[lowered]},{value}" if lowered in headers else value
        event = http_api_event(
            method,
            target,
            headers,
            body,
            request.client_address[0],
            request.headers.get("host", ""),
            self.options.base64_bodies,
        )
        if self.options.rewrite_event is not None:
            event = self.options.rewrite_event(event)
        try:
            response = function.invoke(event)
        except Exception:  # noqa: BLE001 - API Gateway answers 500 when the integration fails
            self._reply(request, 500, JSON_HEADERS, b'{"message":"Internal Server Error"}')
            return
        status = int(response.get("statusCode", 200))
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else str(payload).encode()
        self._reply(request, status, dict(response.get("headers") or {}), data)

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        request.send_response(status)
        for key, value in headers.items():
            if key.lower() != "content-length":
                request.send_header(key, value)
        request.send_header("content-length", str(len(body)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(body)


def readable_log_line(log: Mapping[str, Any]) -> str:
    """Powertools' structured record as one line a person can follow across functions."""
    skip = {
        "level",
        "location",
        "message",
        "timestamp",
        "service",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "xray_trace_id",
        "sampling_rate",
    }
    extras = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in log.items() if k not in skip)
    stamp = datetime.now().strftime("%H:%M:%S")
    source = threading.current_thread().name
    level = str(log.get("level", "INFO"))
    return f"{stamp} {source:<10} {level:<7} {log.get('message', '')}" + (f"  {extras}" if extras else "")
