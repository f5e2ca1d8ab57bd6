"""The HTTP face of the stand-in: WaveSpeed's REST API, its CDN for outputs and its media storage."""

from __future__ import annotations

import hmac
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx

from .faults import Faults
from .history import InvalidHistoryQuery, parse_history_query
from .inputs import MODELS, InvalidRequest, media_urls
from .net import LOOPBACK_HOSTS, loopback_client
from .tasks import Delivery, PlannedFaults, RunnerSettings, Task, TaskBoard, TaskRunner
from .uploads import MediaKind, MediaStore, UploadRefused, check_upload_size, media_kind

API_PREFIX = "/api/v3/"
MAX_BODY_BYTES = 512 * 1024 * 1024
RESULT_PATH = re.compile(r"^predictions/([A-Za-z0-9_-]+)/result$")
OUTPUT_PATH = re.compile(r"^/outputs/([A-Za-z0-9_-]+)/video\.mp4$")
MEDIA_PATH = re.compile(r"^/media/([0-9a-f]{32})/([^/]+)$")
UPLOAD_TARGET_PATH = re.compile(r"^/upload-targets/([0-9a-f]{32})$")
# The API's routes and the methods each answers; any other method gets 405, any other path 404.
API_ROUTES: dict[str, frozenset[str]] = {
    "webhook/secret": frozenset({"GET"}),
    "predictions": frozenset({"POST"}),
    "media/upload/binary": frozenset({"POST"}),
    "upload": frozenset({"POST"}),
    "media/uploads": frozenset({"POST"}),
    **{model: frozenset({"POST"}) for model in MODELS},
}
UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class BadRequest(Exception):
    """An answer other than 200, carried up to the one place that writes it."""

    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


class AccountRateLimit:
    """The account's limit on submissions: a token bucket of ``per_second`` a second, ``per_second`` deep.

    A submission over it is answered 429 with the seconds until a token is free; 0 means no limit.
    Every submission that got through is timed, for measuring the pace a client keeps.
    """

    def __init__(self, per_second: float = 0.0) -> None:
        self.per_second = per_second
        self.refused = 0
        self.passed_at: list[float] = []
        self._tokens = max(1.0, per_second)
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float | None:
        """None when the submission may pass, else the seconds to wait."""
        with self._lock:
            now = time.monotonic()
            if self.per_second > 0:
                depth = max(1.0, self.per_second)
                self._tokens = min(depth, self._tokens + (now - self._updated) * self.per_second)
                self._updated = now
                if self._tokens < 1.0:
                    self.refused += 1
                    return (1.0 - self._tokens) / self.per_second
                self._tokens -= 1.0
            self.passed_at.append(now)
            return None


class WaveSpeedStandin:
    """A local, fault-injectable WaveSpeed for integration tests and the demo stack."""

    def __init__(
        self,
        api_key: str = "local-standin-api-key",
        webhook_secret: str = "whsec_local-standin-secret",  # noqa: S107 - a published local default
        seconds_per_output_second: float = 0.0,
        min_processing_seconds: float = 0.2,
        frame_rate: int = 5,
        video_height: int | None = 240,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] | None = None,
        rate_limit_per_second: float = 0.0,
    ) -> None:
        if host.lower() not in LOOPBACK_HOSTS:
            raise ValueError(f"the stand-in listens on loopback only, not {host!r}")
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.host = host
        self.faults = Faults()
        self.rate_limit = AccountRateLimit(rate_limit_per_second)
        self._requested_port = port
        self._log = log or (lambda _line: None)
        self._settings = RunnerSettings(
            webhook_secret=webhook_secret,
            seconds_per_output_second=seconds_per_output_second,
            min_processing_seconds=min_processing_seconds,
            frame_rate=frame_rate,
            video_height=video_height,
        )
        self._board = TaskBoard()
        self._media = MediaStore()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._runner: TaskRunner | None = None
        self._http: httpx.Client | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the stand-in is already running")
        server = _Server((self.host, self._requested_port), _Handler, self, self._log)
        self._server = server
        self._http = loopback_client()
        self._runner = TaskRunner(self._board, self._settings, self._http, self.output_url, self._log)
        self._runner.start()
        self._thread = threading.Thread(target=server.serve_forever, name="standin-http", daemon=True)
        self._thread.start()
        self._log(f"WaveSpeed stand-in listening on {self.base_url}")

    def stop(self) -> None:
        """Stop answering and stop the workers; a render already running finishes in the background."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        if self._http is not None:
            self._http.close()
            self._http = None
        self._log("WaveSpeed stand-in stopped")

    def __enter__(self) -> WaveSpeedStandin:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # --- what tests look at --------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/api/v3"

    @property
    def submit_count(self) -> int:
        """Tasks created, i.e. what WaveSpeed would bill; a refused or faulted-away submit is not one."""
        with self._board.changed:
            return self._board.submit_count

    @property
    def tasks(self) -> dict[str, Task]:
        """A snapshot of the id -> task map (the tasks themselves are live), safe to iterate."""
        with self._board.changed:
            return dict(self._board.tasks)

    @property
    def webhook_deliveries(self) -> list[Delivery]:
        """A snapshot. Each POST is recorded once its answer is in, so a receiver sees it first:
        call ``wait_idle`` before reading."""
        with self._board.changed:
            return list(self._board.deliveries)

    def wait_idle(self, timeout: float) -> bool:
        """True once every task is final and no webhook is waiting or being sent."""
        return self._board.wait_idle(timeout)

    def reset_faults(self) -> None:
        self.faults.reset()

    def expire(self, task_id: str) -> None:
        """Forget a task, as WaveSpeed does once results expire: its result and output then answer 404."""
        with self._board.changed:
            self._board.tasks.pop(task_id, None)
            self._board.outputs.pop(task_id, None)

    def output_url(self, task_id: str) -> str:
        return f"{self.root_url}/outputs/{task_id}/video.mp4"

    # --- request handling (called from the handler threads) ------------------------------------

    def authorized(self, header: str | None) -> bool:
        expected = f"Bearer {self.api_key}".encode()
        return hmac.compare_digest((header or "").strip().encode(), expected)

    def submit(self, model: str, raw: bytes, webhook_url: str | None) -> dict[str, Any]:
        spec = MODELS.get(model)
        if spec is None:
            raise BadRequest(404, f"model {model} not found")
        if self.faults.draw("submit_429"):
            self._log(f"submit to {model} answered 429 (fault)")
            raise BadRequest(429, "Too many requests", {"Retry-After": _seconds(self.faults.retry_after_seconds)})
        wait = self.rate_limit.take()
        if wait is not None:
            self._log(f"submit to {model} answered 429 (over the account's {self.rate_limit.per_second:g} per second)")
            raise BadRequest(429, "Too many requests", {"Retry-After": _seconds(wait)})
        if self.faults.draw("submit_500"):
            self._log(f"submit to {model} answered 500 before creating a task (fault)")
            raise BadRequest(500, "Internal server error")
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequest(400, "request body must be a JSON object")
        try:
            media_urls(spec, body)
        except InvalidRequest as exc:
            raise BadRequest(400, str(exc)) from exc
        runner = self._runner
        if runner is None:
            raise BadRequest(503, "the stand-in is stopping")
        task_id = uuid.uuid4().hex
        task = Task(
            id=task_id,
            model=model,
            input=body,
            webhook_url=webhook_url,
            result_url=f"{self.base_url}/predictions/{task_id}/result",
            created_at=datetime.now(UTC),
            planned=PlannedFaults.draw(self.faults),
        )
        self._board.add(task)
        prediction = task.prediction()
        runner.enqueue(task)
        self._log(f"submit {task_id} {model} webhook={webhook_url or '-'}")
        if self.faults.draw("submit_500_after_create"):
            self._log(f"submit {task_id} answered 500 after creating the task (fault: lost answer)")
            raise BadRequest(500, "Internal server error")
        return prediction

    def result(self, task_id: str) -> dict[str, Any]:
        if self.faults.draw("result_500"):
            self._log(f"result of {task_id} answered 500 (fault)")
            raise BadRequest(500, "Internal server error")
        prediction = self._board.prediction(task_id)
        if prediction is None:
            raise BadRequest(404, f"prediction {task_id} not found")
        return prediction

    def history(self, raw: bytes) -> dict[str, Any]:
        """``POST /predictions``: the tasks of the past 7 days, newest first, a page at a time."""
        if self.faults.draw("history_500"):
            self._log("prediction history answered 500 (fault)")
            raise BadRequest(500, "Internal server error")
        try:
            query = parse_history_query(raw, datetime.now(UTC), self.faults.history_lag_seconds)
        except InvalidHistoryQuery as exc:
            raise BadRequest(400, str(exc)) from exc
        broken_from = self.faults.history_500_from_page
        if broken_from > 0 and query.page >= broken_from:
            self._log(f"prediction history page {query.page} answered 500 (fault)")
            raise BadRequest(500, "Internal server error")
        total, items = self._board.history(query)
        return {"page": query.page, "total": total, "items": items}

    def store_media(self, content_type: str, raw: bytes) -> dict[str, Any]:
        """``POST /media/upload/binary``."""
        filename, media_type, content = _multipart_file(content_type, raw)
        kind = _kind(filename, media_type)
        media_id = self._media.put(filename, media_type, kind, content, datetime.now(UTC))
        self._log(f"media upload {media_id}/{filename} ({len(content)} bytes)")
        return {
            "type": kind,
            "download_url": self._media_url(media_id, filename),
            "filename": filename,
            "size": len(content),
        }

    def upload_file(self, content_type: str, raw: bytes) -> dict[str, Any]:
        """``POST /upload``: the same storage, with the documented per-kind size limits."""
        filename, media_type, content = _multipart_file(content_type, raw)
        kind = _kind(filename, media_type)
        try:
            check_upload_size(kind, len(content))
        except UploadRefused as exc:
            raise BadRequest(exc.code, exc.message) from exc
        media_id = self._media.put(filename, media_type, kind, content, datetime.now(UTC))
        self._log(f"upload {media_id}/{filename} ({len(content)} bytes)")
        return {"url": self._media_url(media_id, filename)}

    def upload_ticket(self, raw: bytes) -> dict[str, Any]:
        """``POST /media/uploads``: where to PUT the file, and the URL a model reads it from afterwards."""
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("filename"), str) or not body["filename"]:
            raise BadRequest(400, "filename is required")
        declared = body.get("content_type", "")
        if not isinstance(declared, str):
            raise BadRequest(400, "content_type must be a string")
        filename = _safe_filename(body["filename"])
        kind = _kind(filename, declared)
        ticket = self._media.open_ticket(filename, declared or "application/octet-stream", kind, datetime.now(UTC))
        self._log(f"upload ticket {ticket.ticket_id} for {filename}")
        return {
            "upload_url": f"{self.root_url}/upload-targets/{ticket.ticket_id}?token={ticket.token}",
            "method": "PUT",
            "download_url": self._media_url(ticket.media_id, filename),
            "filename": filename,
            "type": kind,
            "expires_at": ticket.expires_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }

    def fill_upload(self, ticket_id: str, token: str, content: bytes) -> bool:
        """The PUT of an upload ticket; ``False`` for an unknown, forged or expired ticket."""
        ticket = self._media.fill_ticket(ticket_id, token, content, datetime.now(UTC))
        if ticket is not None:
            self._log(f"upload ticket {ticket_id} filled: {ticket.filename} ({len(content)} bytes)")
        return ticket is not None

    def media(self, media_id: str, filename: str) -> tuple[str, bytes] | None:
        stored = self._media.get(media_id, filename)
        return (stored.content_type, stored.content) if stored is not None else None

    def purge_expired(self) -> None:
        """Delete what is older than the retention time, as WaveSpeed deletes after 7 days."""
        cutoff = datetime.now(UTC) - timedelta(seconds=max(0.0, self.faults.retention_seconds))
        gone = self._board.purge(cutoff)
        self._media.purge(cutoff)
        if gone:
            self._log(f"deleted {len(gone)} task(s) past the retention time")

    def _media_url(self, media_id: str, filename: str) -> str:
        return f"{self.root_url}/media/{media_id}/{quote(filename)}"

    def output(self, task_id: str) -> bytes | None:
        return self._board.output(task_id)


def _kind(filename: str, content_type: str) -> MediaKind:
    try:
        return media_kind(filename, content_type)
    except UploadRefused as exc:
        raise BadRequest(exc.code, exc.message) from exc


def _safe_filename(name: str) -> str:
    cleaned = UNSAFE_NAME.sub("_", name.rsplit("/", 1)[-1]).strip(".")
    return cleaned or "file"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _multipart_file(content_type: str, raw: bytes) -> tuple[str, str, bytes]:
    """The form field ``file`` of a multipart body: (filename, content type, bytes).

    Parsed by hand on the exact bytes, because binary content must come back unchanged.
    """
    header = EmailMessage()
    header["content-type"] = content_type
    boundary = header.get_boundary()
    if header.get_content_type() != "multipart/form-data" or not boundary:
        raise BadRequest(400, "expected a multipart/form-data body with a file field")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    for section in (b"\r\n" + raw).split(delimiter)[1:]:
        if section.startswith(b"--"):
            break
        head, separator, content = section.partition(b"\r\n\r\n")
        if not separator:
            continue
        part = BytesHeaderParser(policy=HTTP).parsebytes(head.lstrip(b" \t").removeprefix(b"\r\n") + b"\r\n\r\n")
        disposition = EmailMessage()
        disposition["content-disposition"] = str(part.get("content-disposition", ""))
        if disposition.get_param("name", header="content-disposition") != "file":
            continue
        filename = _safe_filename(disposition.get_filename() or "file")
        return filename, str(part.get("content-type", "application/octet-stream")), content
    raise BadRequest(400, "file is required")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        standin: WaveSpeedStandin,
        log: Callable[[str], None],
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.standin = standin
        self.log = log
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The stdlib prints a traceback to stderr; the stand-in speaks only through its log.
        error = sys.exc_info()[1]
        self.log(f"error while answering {client_address}: {type(error).__name__}: {error}")


class _Handler(BaseHTTPRequestHandler):
    """Routes one request; every domain outcome is an envelope, written in one place."""

    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the stdlib writes every request to stderr."""

    @property
    def standin(self) -> WaveSpeedStandin:
        return self.server.standin

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def _route(self, method: str) -> None:
        """Unknown paths answer 404 and known paths 405 for another method, as the real API does."""
        raw = self._read_body()
        if raw is None:
            return
        self.standin.purge_expired()
        url = urlsplit(self.path)
        if url.path.startswith(API_PREFIX):
            route = url.path.removeprefix(API_PREFIX)
            allowed = API_ROUTES.get(route) or (frozenset({"GET"}) if RESULT_PATH.match(route) else None)
            if self._refused(url.path, method, allowed):
                return
            self._api(lambda: self._api_call(route, raw, url.query))
        elif match := OUTPUT_PATH.match(url.path):
            if not self._refused(url.path, method, frozenset({"GET"})):
                self._stream_output(match.group(1))
        elif match := MEDIA_PATH.match(url.path):
            if not self._refused(url.path, method, frozenset({"GET"})):
                self._send_media(match.group(1), unquote(match.group(2)))
        elif match := UPLOAD_TARGET_PATH.match(url.path):
            if not self._refused(url.path, method, frozenset({"PUT"})):
                token = parse_qs(url.query).get("token", [""])[0]
                if self.standin.fill_upload(match.group(1), token, raw):
                    self._send(200, "text/plain", b"")
                else:
                    self._envelope(403, {"code": 403, "message": "upload URL unknown, expired or not signed"})
        else:
            self._envelope(404, {"code": 404, "message": f"not found: {url.path}"})

    def _refused(self, path: str, method: str, allowed: frozenset[str] | None) -> bool:
        if allowed is None:
            self._envelope(404, {"code": 404, "message": f"not found: {path}"})
            return True
        if method not in allowed:
            message = f"method {method} not allowed for {path}"
            self._envelope(405, {"code": 405, "message": message}, {"Allow": ", ".join(sorted(allowed))})
            return True
        return False

    def _api_call(self, route: str, raw: bytes, query: str) -> dict[str, Any]:
        content_type = self.headers.get("content-type", "")
        if route == "webhook/secret":
            return {"secret": self.standin.webhook_secret}
        if match := RESULT_PATH.match(route):
            return self.standin.result(match.group(1))
        if route == "predictions":
            return self.standin.history(raw)
        if route == "media/upload/binary":
            return self.standin.store_media(content_type, raw)
        if route == "upload":
            return self.standin.upload_file(content_type, raw)
        if route == "media/uploads":
            return self.standin.upload_ticket(raw)
        webhook = parse_qs(query).get("webhook", [None])[0]
        return self.standin.submit(route, raw, webhook or None)

    def _send_media(self, media_id: str, filename: str) -> None:
        stored = self.standin.media(media_id, filename)
        if stored is None:
            self._envelope(404, {"code": 404, "message": "media not found"})
        else:
            self._send(200, stored[0], stored[1])

    def _api(self, answer: Callable[[], dict[str, Any]]) -> None:
        if not self.standin.authorized(self.headers.get("authorization")):
            self._envelope(401, {"code": 401, "message": "Unauthorized"})
            return
        try:
            data = answer()
        except BadRequest as exc:
            self._envelope(exc.code, {"code": exc.code, "message": exc.message}, exc.headers)
            return
        self._envelope(200, {"code": 200, "message": "success", "data": data})

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._envelope(413, {"code": 413, "message": "request body too large or unreadable"})
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                size = -1
            total += size
            if size < 0 or total > MAX_BODY_BYTES:
                self.close_connection = True
                self._envelope(413, {"code": 413, "message": "request body too large or unreadable"})
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)

    def _envelope(self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(code, "application/json", json.dumps(payload).encode(), headers)

    def _send(self, code: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _stream_output(self, task_id: str) -> None:
        """Like a CDN URL: no auth; optionally slow, to test downloads that take a while."""
        video = self.standin.output(task_id)
        if video is None:
            self._envelope(404, {"code": 404, "message": "output not found"})
            return
        if self.standin.faults.output_redirect_url:
            self._send(302, "text/plain", b"", {"Location": self.standin.faults.output_redirect_url})
            return
        if self.standin.faults.output_padding_bytes > 0:
            self._send_chunked(video, self.standin.faults.output_padding_bytes)
            return
        rate = self.standin.faults.output_bytes_per_second
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(video)))
        self.end_headers()
        try:
            if not rate or rate <= 0:
                self.wfile.write(video)
                return
            step = max(1, int(rate / 20))
            for start in range(0, len(video), step):
                chunk = video[start : start + step]
                self.wfile.write(chunk)
                self.wfile.flush()
                time.sleep(len(chunk) / rate)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_chunked(self, video: bytes, padding: int) -> None:
        """The video and ``padding`` zero bytes, chunked: a body whose size is known only at its end."""
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        filler = bytes(min(padding, 1024 * 1024))
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(video), video))
            remaining = padding
            while remaining > 0:
                piece = filler[: min(remaining, len(filler))]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                remaining -= len(piece)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
