"""The console's HTTP server: the standard library's threading server, pages rendered by Jinja2.

It listens on 127.0.0.1 only and is for the person at this machine: requests naming another host
are refused (a web page elsewhere cannot reach it by DNS tricks), and every request that changes
something must carry the page's token and come from the console's own origin (a web page elsewhere
cannot drop jobs through it). Every value in a page is escaped by the templates; the Content
Security Policy allows no inline script or style, and media only from the bucket's endpoint.
"""

from __future__ import annotations

import hmac
import json
import mimetypes
import secrets
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from infinitetalk_cli.render import seconds_text
from infinitetalk_core.media import EXTENSIONS
from infinitetalk_core.models import (
    ROLE_KIND,
    TERMINAL_STATUSES,
    JobStatus,
    ModelName,
    Resolution,
    Role,
    SpeakerOrder,
    usd_text,
    utc_now,
)
from infinitetalk_core.models import iso as iso_time

from .drops import DropDesk, DropProblem
from .views import (
    JobFilters,
    StackReader,
    job_for_name,
    job_month,
    job_page,
    list_jobs,
    month_page,
    months_of,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
STATIC_FILES = frozenset({"console.css", "console.js", "icon.svg"})
MAX_JSON_BYTES = 64 * 1024
TOKEN_HEADER = "X-Console-Token"  # noqa: S105 - a header name, not a secret
# Fields of the drop form, in the order a person fills them.
FORM_ROLES = (Role.IMAGE, Role.AUDIO, Role.LEFT_AUDIO, Role.RIGHT_AUDIO, Role.VIDEO, Role.MASK_IMAGE)


def path_part(value: object) -> str:
    """One URL path segment: every character that could end or change the path is encoded."""
    return quote(str(value), safe="")


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def templates() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["path"] = path_part
    environment.filters["when"] = when
    environment.filters["iso"] = lambda value: iso_time(value) if value else ""
    environment.filters["usd"] = usd_text
    environment.filters["seconds"] = seconds_text
    return environment


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class Console:
    """The pages and the JSON the pages poll; one per server, shared by its request threads."""

    def __init__(
        self,
        reader: StackReader,
        s3: S3Client,
        clock: Callable[[], datetime] = utc_now,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.reader = reader
        self.clock = clock
        self.log = log
        self.token = secrets.token_urlsafe(24)
        self.drops = DropDesk(s3, reader.bucket, clock, log)
        self.templates = templates()
        probe = urlsplit(reader.bucket.presign("probe", 60))
        self.media_origin = f"{probe.scheme}://{probe.netloc}"

    # ---- rendering ---------------------------------------------------------------------------
    def page(self, template: str, status: int = 200, **values: Any) -> Reply:
        body = self.templates.get_template(template).render(
            token=self.token, source=self.reader.source, now=self.clock(), **values
        )
        return Reply(status, body.encode())

    def problem(self, status: int, title: str, detail: str) -> Reply:
        return self.page("problem.html", status, title=title, detail=detail)

    @staticmethod
    def json(document: object, status: int = 200) -> Reply:
        return Reply(status, json.dumps(document).encode(), "application/json")

    # ---- pages -------------------------------------------------------------------------------
    def jobs(self, query: dict[str, str], fragment: bool) -> Reply:
        filters = JobFilters.from_query(query)
        now = self.clock()
        rows = list_jobs(self.reader, filters, now)
        if fragment:
            return self.page("job_rows.html", rows=rows)
        month = now.strftime("%Y-%m")
        alerts = self.reader.alerts.for_month(month)
        months = sorted(set(months_of(rows)) | {month} | ({filters.month} if filters.month else set()), reverse=True)
        return self.page(
            "jobs.html",
            rows=rows,
            filters=filters,
            statuses=[s.value for s in JobStatus],
            months=months,
            alerts=alerts,
            month=month,
            rows_url="/jobs/rows?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in filters.query().items()),
        )

    def job(self, job_id: str) -> Reply:
        found = job_page(self.reader, job_id, self.clock())
        if found is None:
            return self.problem(404, "No such job", f"There is no job {job_id!r} in this stack.")
        return self.page("job.html", page=found, month=job_month(found.job))

    def job_state(self, job_id: str) -> Reply:
        job = self.reader.jobs.get(job_id)
        if job is None:
            return self.json({"error": "no such job"}, 404)
        return self.json(
            {
                "job_id": job.job_id,
                "status": job.status.value,
                "status_since": iso_time(job.status_since),
                "finished": job.status in TERMINAL_STATUSES,
            }
        )

    def name(self, name: str, as_json: bool) -> Reply:
        job = job_for_name(self.reader, name)
        url = f"/jobs/{path_part(job.job_id)}" if job else None
        if as_json:
            return self.json({"job_id": job.job_id if job else None, "url": url})
        if url is not None:
            return Reply(303, b"", headers=(("Location", url),))
        return self.page("waiting.html", name=name)

    def money(self, query: dict[str, str]) -> Reply:
        today = self.clock().date()
        month = query.get("month") or today.strftime("%Y-%m")
        filters = JobFilters.from_query({"month": month})
        if not filters.month:
            return self.problem(400, "Not a month", f"{month!r}: use YYYY-MM, for example {today:%Y-%m}.")
        page = month_page(self.reader, filters.month, today)
        return self.page("money.html", page=page, alerts=page.alerts, today=today)

    def drop_form(self) -> Reply:
        accept = {role.value: ",".join(f".{e}" for e in sorted(EXTENSIONS[ROLE_KIND[role]])) for role in FORM_ROLES}
        return self.page(
            "drop.html",
            roles=[role.value for role in FORM_ROLES],
            accept=accept,
            models=[("", "from the files")] + [(m.value, m.short) for m in ModelName],
            resolutions=[r.value for r in Resolution],
            orders=[("", "not set (two speakers: meanwhile)")] + [(o.value, o.value) for o in SpeakerOrder],
        )

    def static(self, name: str) -> Reply:
        if name not in STATIC_FILES:
            return self.problem(404, "Not found", "No such file.")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        return Reply(200, (STATIC / name).read_bytes(), content_type, (("Cache-Control", "max-age=300"),))

    # ---- drops ---------------------------------------------------------------------------
    def drop_call(self, method: str, parts: list[str], query: dict[str, str], handler: ConsoleHandler) -> Reply:
        try:
            if method == "POST" and len(parts) == 2:
                return self.json({"drop_id": self.drops.open()}, 201)
            if len(parts) < 3:
                return self.json({"problems": ["no such drop call"]}, 404)
            drop_id = parts[2]
            if method == "PUT" and len(parts) == 5 and parts[3] == "files":
                self.drops.stage(drop_id, parts[4], query.get("filename", ""), handler.rfile, handler.content_length())
                return self.json({"staged": parts[4]})
            if method == "POST" and len(parts) == 4 and parts[3] == "submit":
                plan = self.drops.submit(drop_id, handler.json_body())
                return self.json(
                    {
                        "name": plan.name,
                        "model": plan.model.value,
                        "waiting_url": f"/names/{path_part(plan.name)}",
                        "files": [u.label for u in plan.uploads],
                    },
                    202,
                )
            if method == "GET" and len(parts) == 3:
                return self.json(self.drops.progress(drop_id))
            if method == "DELETE" and len(parts) == 3:
                self.drops.discard(drop_id)
                return self.json({"discarded": drop_id})
        except DropProblem as exc:
            return self.json({"problems": exc.problems}, exc.status)
        return self.json({"problems": ["no such drop call"]}, 404)

    # ---- dispatch ------------------------------------------------------------------------
    def route(self, method: str, target: str, handler: ConsoleHandler) -> Reply:
        split = urlsplit(target)
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        head = parts[0] if parts else ""
        if head == "api" and len(parts) >= 2 and parts[1] == "drops":
            return self.drop_call(method, parts, query, handler)
        if method != "GET":
            return self.problem(405, "Not allowed", f"{method} is not served here.")
        if parts in ([""], []):
            return Reply(303, b"", headers=(("Location", "/jobs"),))
        if parts == ["jobs"]:
            return self.jobs(query, fragment=False)
        if parts == ["jobs", "rows"]:
            return self.jobs(query, fragment=True)
        if len(parts) == 2 and head == "jobs":
            return self.job(parts[1])
        if len(parts) == 3 and parts[:2] == ["api", "jobs"]:
            return self.job_state(parts[2])
        if len(parts) == 2 and head == "names":
            return self.name(parts[1], as_json=False)
        if len(parts) == 3 and parts[:2] == ["api", "names"]:
            return self.name(parts[2], as_json=True)
        if parts == ["money"]:
            return self.money(query)
        if parts == ["drop"]:
            return self.drop_form()
        if len(parts) == 2 and head == "static":
            return self.static(parts[1])
        if parts == ["favicon.ico"]:
            return self.static("icon.svg")
        return self.problem(404, "Not found", "There is no such page in the console.")

    def security_headers(self) -> list[tuple[str, str]]:
        media = self.media_origin
        policy = (
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            f"img-src 'self' {media}; media-src {media}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        )
        return [
            ("Content-Security-Policy", policy),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
        ]


class ConsoleHandler(BaseHTTPRequestHandler):
    server: ConsoleHttpServer
    server_version = "infinitetalk-console"
    sys_version = ""

    def content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None or not raw.isdigit():
            raise DropProblem(411, ["the request must say its length (Content-Length)"])
        return int(raw)

    def json_body(self) -> dict[str, object]:
        length = self.content_length()
        if length > MAX_JSON_BYTES:
            raise DropProblem(413, ["the form is too large"])
        try:
            document = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as exc:
            raise DropProblem(400, [f"the form did not arrive as JSON: {exc}"]) from exc
        if not isinstance(document, dict):
            raise DropProblem(400, ["the form must be a JSON object"])
        return document

    def _refusal(self, method: str) -> Reply | None:
        console = self.server.console
        host = (self.headers.get("Host") or "").lower()
        if host not in self.server.hosts:
            return console.problem(421, "Wrong host", "The console answers only at the address it printed.")
        if method in {"GET", "HEAD"}:
            return None
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in self.server.origins:
            return console.json({"problems": ["requests from other sites are refused"]}, 403)
        token = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(token.encode(), console.token.encode()):
            return console.json({"problems": ["missing or wrong console token: reload the page"]}, 403)
        return None

    def _serve(self, method: str) -> None:
        console = self.server.console
        try:
            reply = self._refusal(method) or console.route(method, self.path, self)
        except (ClientError, BotoCoreError) as exc:
            console.log(f"AWS error on {method} {self.path.split('?')[0]}: {exc}")
            reply = console.problem(502, "The stack could not be read", f"AWS refused or could not be reached: {exc}")
        except Exception:  # noqa: BLE001 - one broken page must not take the console down
            console.log(f"error on {method} {self.path.split('?')[0]}:\n{traceback.format_exc()}")
            reply = console.problem(500, "Something broke", "The console's log has the details.")
        self.send_response(reply.status)
        headers = dict(console.security_headers())
        headers.setdefault("Cache-Control", "no-store")
        headers.update(dict(reply.headers))
        headers["Content-Type"] = reply.content_type
        headers["Content-Length"] = str(len(reply.body))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the pages poll every few seconds. Failures are logged where they happen."""


class ConsoleHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, console: Console, port: int) -> None:
        super().__init__(("127.0.0.1", port), ConsoleHandler)
        self.console = console
        port = self.server_address[1]
        self.hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})
        self.origins = frozenset(f"http://{host}" for host in self.hosts)


class ConsoleServer:
    """Start with ``start()`` (a background thread) or run in the foreground with ``serve_forever()``."""

    def __init__(self, console: Console, port: int = 0) -> None:
        self.console = console
        self._http = ConsoleHttpServer(console, port)
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="console", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        self._serving.set()
        try:
            self._http.serve_forever()
        finally:
            self._serving.clear()

    def stop(self) -> None:
        if self._serving.is_set():
            self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.console.drops.close()
