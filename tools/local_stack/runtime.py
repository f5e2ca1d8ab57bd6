"""The functions of ``functions/`` run as Lambda would run them: same handlers, same event shapes.

SQS-triggered functions get genuine SQS batch events from a poller that deletes what succeeded
and lets the rest come back (and reach the dead-letter queue after the template's
``maxReceiveCount``); the HTTP API route is a real local HTTP endpoint that turns requests
into API Gateway payload-2.0 events; scheduled functions run on a timer.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from infinitetalk_core import pipeline, settings

from .calls import invocation_of
from .template import ACCOUNT_ID, FunctionSpec

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

Handler = Callable[[dict[str, Any], Any], Any]
Log = Callable[[str, str], None]


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    timeout_seconds: int
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


class LocalFunction:
    """One function's handler, loaded from its code directory; one invocation at a time, like one instance."""

    def __init__(self, spec: FunctionSpec, log: Log) -> None:
        self.spec = spec
        self.name = spec.short_name
        self._log = log
        self._lock = threading.Lock()
        module_name, _, attribute = spec.handler.rpartition(".")
        module = self._load(module_name)
        self._own_cold_start(module)
        self._handler: Handler = getattr(module, attribute)

    @staticmethod
    def _own_cold_start(module: ModuleType) -> None:
        """In Lambda each function has its own process: give this one its own pipeline.

        Its clients and its cached secrets are then its own, so one function's cached secret never
        hides another function's read of it, and the recorded calls are each function's own.
        """
        if getattr(module, "get_pipeline", None) is pipeline.get_pipeline:
            vars(module)["get_pipeline"] = cache(lambda: pipeline.build_pipeline(settings.get_settings()))

    def _load(self, module_name: str) -> ModuleType:
        path = self.spec.code_dir / f"{module_name.replace('.', '/')}.py"
        loaded = importlib.util.spec_from_file_location(f"local_function_{self.name}_{module_name}", path)
        if loaded is None or loaded.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
        return module

    def invoke(self, event: dict[str, Any]) -> Any:
        """Raises what the handler raises, as Lambda reports a function error."""
        thread = threading.current_thread()
        caller_name = thread.name
        with self._lock, invocation_of(self.spec.logical_id):
            thread.name = self.name  # the log's source column
            try:
                return self._handler(event, LambdaContext(function_name=self.name, timeout_seconds=self.spec.timeout))
            except Exception:
                self._log(self.name, "function error:\n" + traceback.format_exc().rstrip())
                raise
            finally:
                thread.name = caller_name


class StoppableThread(threading.Thread):
    def __init__(self, name: str, target: Callable[[threading.Event], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.stopping = threading.Event()
        self._loop = target

    def run(self) -> None:
        self._loop(self.stopping)

    def stop(self) -> None:
        self.stopping.set()


class SqsPoller:
    """An event source mapping: batches from the queue to the function, partial failures honoured."""

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
        self.thread = StoppableThread(f"poll-{function.name}", self._run)

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                self.poll_once(wait_seconds=1)
            except Exception:  # noqa: BLE001 - a poller outlives any one bad batch, as the real one does
                if not stopping.is_set():
                    self.function._log(self.function.name, "poller error:\n" + traceback.format_exc().rstrip())
                    stopping.wait(1)

    def poll_once(self, wait_seconds: int = 0) -> int:
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = answer.get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [self._record(m) for m in messages]}
        try:
            response = self.function.invoke(event)
            reported = (response or {}).get("batchItemFailures", []) if self.partial_failures else []
            failed = {f["itemIdentifier"] for f in reported}
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
        return len(messages)

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
    """An EventBridge schedule rule: the function gets a ``Scheduled Event`` every interval."""

    def __init__(self, function: LocalFunction, interval_seconds: float, region: str) -> None:
        self.function = function
        self.interval = interval_seconds
        self.region = region
        self.thread = StoppableThread(f"timer-{function.name}", self._run)

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.interval):
            try:
                self.fire()
            except Exception:  # noqa: BLE001, S112 - already logged by the function; the schedule goes on
                continue

    def fire(self) -> Any:
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
            }
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
