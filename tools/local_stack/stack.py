"""The whole pipeline on one machine: moto's server for AWS, the stand-in (or the real API) for WaveSpeed."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import boto3
import httpx
from moto.server import ThreadedMotoServer
from s3transfer.futures import BoundedExecutor

from infinitetalk_cli.connection import Connection
from infinitetalk_console import ConsoleServer, start_console
from infinitetalk_core import clients, pipeline, settings
from infinitetalk_core.models import TERMINAL_STATUSES, Job, JobStatus
from infinitetalk_core.observability import logger as core_logger
from infinitetalk_core.observability import metrics as core_metrics
from infinitetalk_core.repository import JobRepository
from infinitetalk_core.storage import outputs_prefix
from wavespeed_standin import WaveSpeedStandin

from . import faults
from .faults import LocalFaults
from .runtime import (
    ContextCarryingPool,
    HttpApi,
    InvocationScopedFormatter,
    LocalFunction,
    ScheduleTimer,
    SqsPoller,
    readable_log_line,
    scope_metrics,
)
from .template import AwsClients, FunctionSpec, Provisioner, Template, schedule_seconds

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

REGION = "us-east-1"
STATE_DIR = Path(".local-stack")
CONNECTION_FILE = STATE_DIR / "stack.json"
# Template parameters sized for minutes-long local runs instead of hours-long real ones.
# How long ``wait_for`` waits, once a job is final, for its event (and so its files) to be out.
ANNOUNCE_GRACE_SECONDS = 10.0
LOCAL_PARAMETERS = {
    "FolderSettleSeconds": "3",
    "WebhookOverdueSeconds": "20",
    "SubmitGraceSeconds": "60",
    # Paced, as deployed, but fast enough that a burst of test drops is not held up.
    "SubmitRatePerSecond": "20",
}
# Settings the template leaves at their defaults, shortened locally so retries take moments.
# (SUBMIT_STALL_SECONDS follows the local submit timeout, see ``LocalStack.submit_stall_seconds``.)
LOCAL_ENVIRONMENT = {
    "RETRY_BASE_SECONDS": "0.2",
    "HTTP_TIMEOUT_SECONDS": "10",
    "SECRET_MAX_AGE_SECONDS": "5",
    "POWERTOOLS_METRICS_DISABLED": "true",
    # The stand-in shares this machine's clock; a result unreadable for ten minutes is given up on.
    "HISTORY_CLOCK_SKEW_SECONDS": "0.5",
    "RESULT_UNREADABLE_LIMIT_SECONDS": "600",
}
# Function timeouts and the trigger queues' visibility timeouts, scaled alike (template 120 s -> 30 s).
TIMEOUT_SCALE = 0.25
MIN_TIMEOUT_SECONDS = 5.0
# A `submitting` job counts as stalled only this long after its function's timeout: its run is over by then.
STALL_MARGIN_SECONDS = 15
# Invocations of one function at once where the template sets no limit (2 cores here).
DEFAULT_CONCURRENCY = 4
AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


def print_log(source: str, message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    for line in message.splitlines() or [""]:
        print(f"{stamp} {source:<10} {line}", flush=True)


@dataclass
class StackOptions:
    """Knobs of one local run; everything else comes from ``template.yaml``."""

    parameters: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    reconcile_every_seconds: float | None = 2.0
    retry_after_seconds: int = 1
    moto_port: int = 0
    api_port: int = 0
    standin_port: int = 0
    standin: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str, str], None] = print_log
    log_level: str = "INFO"
    # Where the functions' own log lines go (standard output unless given).
    log_stream: TextIO | None = None
    # The web console on 127.0.0.1 (``make up`` starts it); 0 picks a free port.
    console: bool = False
    console_port: int = 0
    # Invocations of one function at once where the template sets no limit; per function (short
    # name, e.g. "fetch") to override even the template's.
    concurrency: int = DEFAULT_CONCURRENCY
    function_concurrency: dict[str, int] = field(default_factory=dict)
    # Timeouts: the template's, times ``timeout_scale`` (at least ``min_timeout_seconds``), or per function.
    timeout_scale: float = TIMEOUT_SCALE
    min_timeout_seconds: float = MIN_TIMEOUT_SECONDS
    function_timeouts: dict[str, float] = field(default_factory=dict)
    # Faults injected into the functions' own AWS and WaveSpeed calls (``local_stack.faults``).
    faults: LocalFaults = field(default_factory=LocalFaults)


class LocalStack:
    """Start with ``with LocalStack(options) as stack:``; every server listens on 127.0.0.1."""

    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.template = Template(region=REGION)
        self.functions: dict[str, LocalFunction] = {}
        self.pollers: list[SqsPoller] = []
        self.timers: list[ScheduleTimer] = []
        self._saved_environment: dict[str, str | None] = {}
        self._moto: ThreadedMotoServer | None = None
        self._standin: WaveSpeedStandin | None = None
        self.api = HttpApi({}, port=self.options.api_port)
        self.endpoint_url = ""
        self.real_wavespeed = bool(os.environ.get("WAVESPEED_API_KEY"))
        self.console: ConsoleServer | None = None
        self._undo: list[Callable[[], None]] = []
        self._wavespeed_base_url = ""
        self._wavespeed_api_key = ""

    # ---- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        log = self.options.log
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        self._set_environment(AWS_ENVIRONMENT)
        self._run_like_lambda()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.options.moto_port, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        self._set_environment({"AWS_ENDPOINT_URL": self.endpoint_url})
        # moto keeps its state per process, not per server: start from an empty account.
        httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=30).raise_for_status()
        log("stack", f"AWS (moto server) at {self.endpoint_url}")

        self.aws = AwsClients(
            s3=self._client("s3"),
            sqs=self._client("sqs"),
            dynamodb=self._client("dynamodb"),
            events=self._client("events"),
            secrets=self._client("secretsmanager"),
        )
        self.template.set_parameters({**LOCAL_PARAMETERS, **self.options.parameters})
        Provisioner(self.template, self.aws).create_all()
        self._scale_visibility_timeouts()
        log("stack", f"created from template.yaml: {', '.join(sorted(self.template.physical))}")

        base_url, api_key, webhook_secret = self._start_wavespeed()
        self._wavespeed_base_url, self._wavespeed_api_key = base_url, api_key
        self._store_secrets(api_key, webhook_secret)
        self._set_environment(self._function_environment(base_url))
        self._route_core_logs()
        for spec in self.template.functions():
            self.functions[spec.short_name] = LocalFunction(
                spec,
                log,
                concurrency=self.concurrency_of(spec),
                timeout_seconds=self.timeout_of(spec),
                faults=self.options.faults,
            )
        self._wire_triggers()
        self.api.start()
        for poller in self.pollers:
            poller.thread.start()
        for timer in self.timers:
            timer.thread.start()
        log("stack", f"webhook endpoint {self.webhook_url}; functions: {', '.join(sorted(self.functions))}")
        if self.options.console:
            self.console = self._start_console()
            log("stack", f"console at {self.console.url}")

    def stop(self) -> None:
        if self.console is not None:
            self.console.stop()
            self.console = None
        threads = [poller.thread for poller in self.pollers] + [timer.thread for timer in self.timers]
        for thread in threads:
            thread.stop()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=10)
        if self.api.thread.is_alive():
            self.api.stop()
        if self._standin is not None:
            self._standin.stop()
            self._standin = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        for key, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environment.clear()
        while self._undo:
            self._undo.pop()()
        if self.options.log_stream is not None:
            core_logger.registered_handler.setStream(sys.stdout)  # type: ignore[attr-defined]
        self._forget_cold_start()

    # ---- running like Lambda -----------------------------------------------------------
    def _run_like_lambda(self) -> None:
        """Hooks that let several invocations share this process as separate Lambda processes would."""
        faults.install()  # before any function's client exists: every client inherits the hooks
        executor = BoundedExecutor.EXECUTOR_CLS
        BoundedExecutor.EXECUTOR_CLS = ContextCarryingPool  # an upload's parts belong to its invocation

        def restore_executor() -> None:
            BoundedExecutor.EXECUTOR_CLS = executor

        self._undo.append(restore_executor)
        self._undo.append(scope_metrics(core_metrics))

    def concurrency_of(self, spec: FunctionSpec) -> int:
        """What the template allows at once (reserved concurrency, the event source's maximum), else the cap."""
        if spec.short_name in self.options.function_concurrency:
            return max(1, self.options.function_concurrency[spec.short_name])
        limits = [spec.reserved_concurrency]
        if spec.sqs_trigger is not None:
            limits.append(spec.sqs_trigger.maximum_concurrency)
        declared = [limit for limit in limits if limit is not None]
        return max(1, min(declared) if declared else self.options.concurrency)

    def timeout_of(self, spec: FunctionSpec) -> float:
        if spec.short_name in self.options.function_timeouts:
            return float(self.options.function_timeouts[spec.short_name])
        return max(self.options.min_timeout_seconds, spec.timeout * self.options.timeout_scale)

    @property
    def submit_stall_seconds(self) -> int:
        """Longer than a submit invocation may run, so a stalled `submitting` job's run is really over."""
        (submit,) = [spec for spec in self.template.functions() if spec.short_name == "submit"]
        return math.ceil(self.timeout_of(submit)) + STALL_MARGIN_SECONDS

    def _scale_visibility_timeouts(self) -> None:
        """A trigger queue's visibility timeout, scaled as its function's timeout is (never below it)."""
        for spec in self.template.functions():
            if spec.sqs_trigger is None:
                continue
            declared = self.template.resources[spec.sqs_trigger.queue_logical_id].get("Properties", {})
            seconds = int(self.template.resolve(declared.get("VisibilityTimeout", 30)))
            scaled = max(math.ceil(self.timeout_of(spec)) + 1, math.ceil(seconds * self.options.timeout_scale))
            self.aws.sqs.set_queue_attributes(
                QueueUrl=self.resource(spec.sqs_trigger.queue_logical_id),
                Attributes={"VisibilityTimeout": str(scaled)},
            )

    # ---- wiring ------------------------------------------------------------------------
    def _client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=REGION)  # type: ignore[call-overload]

    def _set_environment(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self._saved_environment.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _start_wavespeed(self) -> tuple[str, str, str]:
        """The stand-in, or the real API when a key is set; returns base URL, API key, webhook secret."""
        if self.real_wavespeed:
            api_key = os.environ["WAVESPEED_API_KEY"]
            base_url = os.environ.get("WAVESPEED_BASE_URL", settings.DEFAULT_WAVESPEED_URL)
            if not os.environ.get("PUBLIC_WEBHOOK_URL"):
                raise SystemExit(
                    "WAVESPEED_API_KEY is set, so the real WaveSpeed is used: also set PUBLIC_WEBHOOK_URL to a public "
                    "HTTPS URL tunnelled to this machine's callback port (start with --api-port to fix the port)"
                )
            self.options.log("stack", f"using the real WaveSpeed API at {base_url}")
        else:
            self._standin = WaveSpeedStandin(
                port=self.options.standin_port,
                log=lambda line: self.options.log("wavespeed", line),
                **self.options.standin,
            )
            self._standin.start()
            base_url, api_key = self._standin.base_url, self._standin.api_key
            self.options.log("stack", f"WaveSpeed stand-in at {base_url}")
        # The same step as after a real deploy: ask the API for the webhook secret.
        answer = httpx.get(f"{base_url}/webhook/secret", headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
        answer.raise_for_status()
        return base_url, api_key, str(answer.json()["data"]["secret"])

    def _store_secrets(self, api_key: str, webhook_secret: str) -> None:
        for logical_id, resource in self.template.resources.items():
            if resource["Type"] != "AWS::SecretsManager::Secret":
                continue
            value = webhook_secret if "Webhook" in logical_id else api_key
            self.aws.secrets.put_secret_value(SecretId=self.template.physical[logical_id].ref, SecretString=value)

    @property
    def webhook_url(self) -> str:
        return os.environ.get("PUBLIC_WEBHOOK_URL") or f"{self.api.base_url}/webhooks/wavespeed"

    def _function_environment(self, wavespeed_base_url: str) -> dict[str, str]:
        """Every function's template variables, merged: they share one process, so they must agree."""
        merged: dict[str, str] = {}
        for spec in self.template.functions():
            for key, value in self.template.function_environment(spec).items():
                if key == "WEBHOOK_URL":
                    value = self.webhook_url
                if key in merged and merged[key] != value:
                    raise ValueError(f"functions disagree on {key}: {merged[key]!r} and {value!r}")
                merged[key] = value
        merged["WAVESPEED_BASE_URL"] = wavespeed_base_url
        merged["POWERTOOLS_LOG_LEVEL"] = self.options.log_level
        if self.real_wavespeed:
            # The real service cannot read presigned URLs of a bucket on 127.0.0.1.
            merged["INPUT_DELIVERY"] = "wavespeed-upload"
        else:
            # Outputs come from the stand-in's own origin, and only from there: an IP literal the
            # allow-list names exactly is the one non-public address the download policy admits.
            merged["OUTPUT_HOSTS"] = self.standin.root_url
        local = {**LOCAL_ENVIRONMENT, "SUBMIT_STALL_SECONDS": str(self.submit_stall_seconds)}
        chosen = {**merged, **local, **self.options.environment}
        if int(chosen["SUBMIT_STALL_SECONDS"]) <= self.submit_stall_seconds - STALL_MARGIN_SECONDS:
            self.options.log(
                "stack",
                f"SUBMIT_STALL_SECONDS={chosen['SUBMIT_STALL_SECONDS']} is not above the submit timeout: a stalled "
                "submission may still be running when it is looked up in the history",
            )
        return chosen

    def _route_core_logs(self) -> None:
        """All functions log through one Powertools logger; render it as one readable stream."""
        core_logger.setLevel(self.options.log_level)
        core_logger.registered_handler.setFormatter(InvocationScopedFormatter(json_serializer=readable_log_line))
        core_logger.registered_handler.setStream(self.options.log_stream or sys.stdout)  # type: ignore[attr-defined]
        self._forget_cold_start()

    @staticmethod
    def _forget_cold_start() -> None:
        """Settings, clients and the pipeline are built once per cold start: this is a new one."""
        settings.get_settings.cache_clear()
        pipeline.get_pipeline.cache_clear()
        clients.reset_clients()

    def _wire_triggers(self) -> None:
        for function in self.functions.values():
            spec = function.spec
            if spec.sqs_trigger is not None:
                queue = self.template.physical[spec.sqs_trigger.queue_logical_id]
                self.pollers.append(
                    SqsPoller(
                        function,
                        self.aws.sqs,
                        queue.ref,
                        queue.attributes["Arn"],
                        spec.sqs_trigger.batch_size,
                        self.options.retry_after_seconds,
                        REGION,
                        partial_failures="ReportBatchItemFailures" in spec.sqs_trigger.response_types,
                        faults=self.options.faults,
                    )
                )
            for route in spec.http_routes:
                self.api.routes[route] = function
            if spec.schedule is not None and self.options.reconcile_every_seconds != 0:
                interval = self.options.reconcile_every_seconds or schedule_seconds(spec.schedule)
                self.timers.append(ScheduleTimer(function, interval, REGION))

    # ---- what tests, the demo and the CLI read -----------------------------------------
    @property
    def standin(self) -> WaveSpeedStandin:
        if self._standin is None:
            raise RuntimeError("the real WaveSpeed API is in use; there is no stand-in")
        return self._standin

    @property
    def s3(self) -> S3Client:
        return self.aws.s3

    @property
    def sqs(self) -> SQSClient:
        return self.aws.sqs

    def resource(self, logical_id: str) -> str:
        return self.template.physical[logical_id].ref

    @property
    def bucket(self) -> str:
        return self.resource("MediaBucket")

    @property
    def jobs_table(self) -> str:
        return self.resource("JobsTable")

    @property
    def ledger_table(self) -> str:
        return self.resource("LedgerTable")

    @property
    def jobs(self) -> JobRepository:
        return JobRepository(self.aws.dynamodb, self.jobs_table, self.ledger_table)

    def connection(self) -> dict[str, str]:
        """What the ``infinitetalk`` command needs to reach this stack."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "bucket": self.bucket,
            "jobs_table": self.jobs_table,
            "ledger_table": self.ledger_table,
            "aws_access_key_id": AWS_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": AWS_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
            "webhook_url": self.webhook_url,
            "monthly_budget_usd": str(settings.get_settings().monthly_budget_usd),
            **({"console_url": self.console.url} if self.console is not None else {}),
            # The stand-in, for a WaveSpeed client of your own (never the real service's key).
            **(
                {"wavespeed_base_url": self._wavespeed_base_url, "wavespeed_api_key": self._wavespeed_api_key}
                if self._standin is not None
                else {}
            ),
        }

    @property
    def console_url(self) -> str:
        return self.console.url if self.console is not None else ""

    def _start_console(self) -> ConsoleServer:
        """The console reads this stack as the ``infinitetalk`` command would, through the connection file's fields."""
        document = self.connection()
        connection = Connection(
            bucket=document["bucket"],
            jobs_table=document["jobs_table"],
            ledger_table=document["ledger_table"],
            region=REGION,
            source="the local stack",
            endpoint_url=self.endpoint_url,
            access_key_id=document["aws_access_key_id"],
            secret_access_key=document["aws_secret_access_key"],
        )
        budget = settings.get_settings().budget_micros
        return start_console(
            connection, budget, self.options.console_port, log=lambda line: self.options.log("console", line)
        )

    def write_connection_file(self, path: Path = CONNECTION_FILE) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.connection(), indent=2) + "\n")
        return path

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def drop_folder(self, name: str, files: Mapping[str, bytes], options: Mapping[str, object] | None = None) -> None:
        """Upload a folder job as a person would: the media first, ``job.json`` (the trigger) last."""
        for filename, body in files.items():
            self.put(f"inbox/{name}/{filename}", body)
        if options is not None:
            self.put(f"inbox/{name}/job.json", json.dumps(options).encode())

    def read_json(self, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def output_keys(self, name: str) -> list[str]:
        return self.keys(outputs_prefix(name))

    def newest_job(self, name: str) -> Job | None:
        jobs = self.jobs.by_name(name)
        return jobs[0] if jobs else None

    def wait_for(self, name: str, statuses: Iterable[str] | None = None, timeout: float = 60.0) -> Job:
        """The newest job of a name once it reaches one of ``statuses`` (default: any final one)."""
        wanted = {JobStatus(s) for s in statuses} if statuses is not None else set(TERMINAL_STATUSES)
        deadline = time.monotonic() + timeout
        job = None
        reached: float | None = None
        while time.monotonic() < deadline:
            job = self.newest_job(name)
            if job is not None and job.status in wanted:
                # A final job is done once its event is out: its error file or outputs are written first.
                # A run that crashed before announcing is given a few seconds, then returned as it is.
                reached = reached or time.monotonic()
                settled = job.status not in TERMINAL_STATUSES or job.event_published
                if settled or time.monotonic() - reached > ANNOUNCE_GRACE_SECONDS:
                    return job
            else:
                reached = None
            time.sleep(0.2)
        if job is not None and job.status in wanted:
            return job
        seen = job.status.value if job else "no job"
        raise TimeoutError(f"{name}: not {'/'.join(sorted(s.value for s in wanted))} after {timeout:.0f} s ({seen})")

    def dead_letters(self) -> dict[str, int]:
        """Messages waiting in each dead-letter queue."""
        counts = {}
        for logical_id, resource in self.template.resources.items():
            if resource["Type"] == "AWS::SQS::Queue" and "DeadLetter" in logical_id:
                attributes = self.sqs.get_queue_attributes(
                    QueueUrl=self.resource(logical_id), AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]
                counts[logical_id] = int(attributes["ApproximateNumberOfMessages"])
        return counts
