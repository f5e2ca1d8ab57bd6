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
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

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
        self._handler: Handler = getattr(self._load(module_name), attribute)

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
        with self._lock:
            threading.current_thread().name = self.name
            try:
                return self._handler(event, LambdaContext(function_name=self.name, timeout_seconds=self.spec.timeout))
            except Exception:
                self._log(self.name, "function error:\n" + traceback.format_exc().rstrip())
                raise


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


@dataclass
class HttpApiOptions:
    """How the local API hands bodies over; API Gateway may base64-encode any of them."""

    base64_bodies: bool = False


def http_api_event(
    method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str, host: str, base64_body: bool
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) proxy event for one request."""
    parts = urlsplit(target)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
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


class HttpApi:
    """The stack's HTTP API on 127.0.0.1: each route invokes its function with a proxy event."""

    def __init__(self, routes: dict[tuple[str, str], LocalFunction], port: int = 0) -> None:
        self.routes = routes
        self.options = HttpApiOptions()
        api = self

        class RequestHandler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                api.handle(self, "POST")

            def do_GET(self) -> None:
                api.handle(self, "GET")

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
        path = urlsplit(request.path).path
        function = self.routes.get((method, path))
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length) if length else b""
        if function is None:
            self._reply(request, 404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
            return
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            lowered = key.lower()
            headers[lowered] = f"{headers[lowered]},{value}" if lowered in headers else value
        event = http_api_event(
            method,
            request.path,
            headers,
            body,
            request.client_address[0],
            request.headers.get("host", ""),
            self.options.base64_bodies,
        )
        try:
            response = function.invoke(event)
        except Exception:  # noqa: BLE001 - API Gateway answers 500 when the integration fails
            self._reply(request, 500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}')
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
