"""The performance goals, each measured against its bare baseline in the same run, with a verdict.

Every figure runs the project's own code and a baseline doing the least AWS work the same step
needs, interleaved (one of each, in alternating order, many times) on the same moto server, so a
noisy machine moves both alike and the ratio is what counts:

1. The webhook, warm: the callback function's handler against one UpdateItem plus one SendMessage,
   for a 1 MiB and a 1 GiB output (the callback downloads nothing: the bytes its output server
   served are shown).
2. AWS calls per accepted webhook, per replay and per repeat under a new id, counted by recording
   every call the function makes.
3. The AWS bill per job: a small batch (both models' kinds, folder and manifest drops) through the
   local stack, every request of every function counted and priced from ``aws_prices.json``.
4. Cold start per function: import and build in a fresh interpreter, against ``import boto3`` and
   only the clients that function was seen calling in (3).
5. Fetch: peak RSS growth and throughput streaming a 1 GiB output into S3, against a plain httpx
   stream handed to ``upload_fileobj``.
6. A 1,000-file drop: one manifest per job, all at once, submitted at the set rate and concurrency
   (``SubmitRatePerSecond``, ``SubmitConcurrency``) to a stand-in that enforces an account rate
   limit above it; the pace WaveSpeed saw against the one set, the 429s and the jobs lost.

Everything listens on 127.0.0.1. Run with ``make bench`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, cast

import boto3
import httpx

from infinitetalk_core import clients
from infinitetalk_core.models import Job, JobSpec, JobStatus, ModelName, Role
from infinitetalk_core.observability import logger as core_logger
from infinitetalk_core.webhooks import expected_signature, webhook_query
from local_stack import LocalStack, StackOptions
from local_stack.calls import CallRecorder, running_function
from local_stack.runtime import http_api_event
from local_stack.samples import portrait_mp4, portrait_png, voice_wav

ROOT = Path(__file__).resolve().parent.parent
PRICES_FILE = Path(__file__).with_name("aws_prices.json")
MIB = 1024 * 1024
WEBHOOK_PATH = "/webhooks/wavespeed"
COST_GOAL_USD = Decimal("0.00004")
# Per invocation, as a deployed function logs besides its own lines: START, END and REPORT
# platform lines, and one embedded-metric-format record of the metrics it flushes.
PLATFORM_LOG_BYTES_PER_INVOCATION = 350
METRICS_LOG_BYTES_PER_INVOCATION = 450
# Which part of the pipeline each AWS service is reached through, for building exactly those parts.
PART_OF_SERVICE = {"dynamodb": "jobs", "s3": "bucket", "sqs": "queues", "events": "events"}
# The functions that talk to WaveSpeed over HTTP (not an AWS call, so not in the recorded calls).
HTTP_FUNCTIONS = frozenset({"submit", "fetch", "reconcile"})
# Used for the cold starts when the cost run did not record a function (as the template grants them).
DEFAULT_SERVICES = {
    "callback": ["dynamodb", "secretsmanager", "sqs"],
    "submit": ["dynamodb", "events", "s3", "secretsmanager", "sns", "sqs"],
    "fetch": ["dynamodb", "events", "s3", "secretsmanager", "sqs"],
    "reconcile": ["dynamodb", "events", "s3", "secretsmanager", "sqs"],
}


# ---- figures and verdicts ----------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: for p99 of 300 samples, the 297th smallest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class Goal:
    measure: str
    now: str
    baseline: str
    ratio: str
    goal: str
    met: bool | None  # None: not measured here

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT MET", None: "not measured"}[self.met]


@dataclass
class Report:
    goals: list[Goal] = field(default_factory=list)

    def add(self, goal: Goal) -> None:
        self.goals.append(goal)
        print(f"  -> {goal.measure}: {goal.now} vs {goal.baseline} = {goal.ratio} (goal {goal.goal}): {goal.verdict}")

    def table(self) -> str:
        lines = [
            "| measure | now | baseline | ratio | goal | verdict |",
            "|---|---|---|---|---|---|",
        ]
        lines += [f"| {g.measure} | {g.now} | {g.baseline} | {g.ratio} | {g.goal} | {g.verdict} |" for g in self.goals]
        return "\n".join(lines)


def timings(label: str, values: list[float]) -> str:
    return (
        f"{label}: median {statistics.median(values):.1f} ms, p99 {percentile(values, 0.99):.1f} ms (n={len(values)})"
    )


# ---- local servers -----------------------------------------------------------------------------


@dataclass
class OutputServer:
    """Serves ``/<n>`` as n MiB of video bytes from one reused buffer; counts the bytes it served."""

    url: str = ""
    served_bytes: int = 0


@contextmanager
def output_server() -> Iterator[OutputServer]:
    chunk = bytes(range(256)) * 4096
    state = OutputServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            size = int(self.path.strip("/").split(".")[0]) * MIB
            self.send_response(200)
            self.send_header("content-type", "video/mp4")
            self.send_header("content-length", str(size))
            self.end_headers()
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)
                with lock:
                    state.served_bytes += len(chunk)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def quiet_stack(options: StackOptions) -> StackOptions:
    options.log = lambda source, message: None
    options.log_level = "WARNING"
    return options


# ---- 1 and 2: the webhook ----------------------------------------------------------------------


def submitted_job(stack: LocalStack, output_mib: int) -> Job:
    """A job waiting for its webhook, written as submit leaves it (inputs need not exist: nothing reads them)."""
    now = time.time()
    name = f"bench-{output_mib}-{uuid.uuid4().hex[:8]}"
    job = Job.model_validate(
        {
            "job_id": f"{name}-{uuid.uuid4().hex[:12]}",
            "job_name": name,
            "status": JobStatus.SUBMITTED,
            "status_since": now,
            "created_at": now,
            "spec": JobSpec(
                name=name,
                model=ModelName.SINGLE,
                inputs={Role.IMAGE: f"library/{name}/image.png", Role.AUDIO: f"library/{name}/audio.wav"},
            ),
            "month": time.strftime("%Y-%m", time.gmtime(now)),
            "rule_set": "seeds-output-5s",
            "input_seconds": Decimal(1),
            "estimate_micros": 150_000,
            "reserved_micros": 150_000,
            "task_id": uuid.uuid4().hex,
            "submit_attempts": 1,
        }
    )
    stack.jobs.put_new(job)
    return job


def webhook_event(stack: LocalStack, job: Job, outputs_url: str, webhook_id: str | None = None) -> dict[str, Any]:
    """The API Gateway event of WaveSpeed's signed delivery of the job's finished task."""
    assert job.spec is not None
    assert job.task_id is not None
    body = json.dumps(
        {
            "id": job.task_id,
            "model": job.spec.model.value,
            "status": "completed",
            "outputs": [outputs_url],
            "has_nsfw_contents": [False],
            "timings": {"inference": 1000},
        },
        separators=(",", ":"),
    ).encode()
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time()))
    secret = stack.standin.webhook_secret
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v3," + expected_signature(secret, webhook_id, stamp, body),
    }
    target = f"{WEBHOOK_PATH}?{webhook_query(job.job_id, job.webhook_token)}"
    return http_api_event("POST", target, headers, body, "127.0.0.1", "127.0.0.1", False)


def invoke_callback(stack: LocalStack, event: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = stack.functions["callback"].invoke(event)
    if int(answer.get("statusCode", 0)) != 200:
        raise RuntimeError(f"the callback refused a genuine delivery: {answer}")
    return answer


def replay(
    calls: list[tuple[str, str, Mapping[str, Any]]],
    by_service: Mapping[str, Any],
    methods: Mapping[str, dict[str, str]],
) -> None:
    for service, operation, params in calls:
        try:
            getattr(by_service[service], methods[service][operation])(**params)
        except by_service[service].exceptions.ClientError as exc:
            raise RuntimeError(f"the replayed {operation} was refused: {exc}") from exc


def without_condition(calls: list[tuple[str, str, Mapping[str, Any]]]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """The same writes with their conditions taken out, and the names and values only those used."""
    loose: list[tuple[str, str, Mapping[str, Any]]] = []
    for service, operation, params in calls:
        kept = {key: value for key, value in params.items() if key != "ConditionExpression"}
        used = set(re.findall(r"[#:][A-Za-z0-9_]+", str(kept.get("UpdateExpression", ""))))
        for field_name in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
            if field_name in kept:
                kept[field_name] = {k: v for k, v in kept[field_name].items() if k in used}
                if not kept[field_name]:
                    del kept[field_name]
        loose.append((service, operation, kept))
    return loose


def outcome_of(answer: Mapping[str, Any]) -> str:
    return str(json.loads(str(answer.get("body") or "{}")).get("outcome"))


def stop_pollers(stack: LocalStack) -> None:
    """Nothing but the benchmark moves a job: queued fetches stay queued."""
    for poller in stack.pollers:
        poller.thread.stop()
    for poller in stack.pollers:
        poller.thread.join(timeout=10)


def bench_webhook(report: Report, webhooks: int) -> None:
    """Each delivery's job is written before and removed after its timing, so every call meets a table
    of the same size: moto copies the whole table in every transaction, which DynamoDB does not."""
    print(
        f"\n1. The webhook, warm: the callback handler vs one UpdateItem + one SendMessage ({webhooks} each, per size)"
    )
    options = quiet_stack(StackOptions(reconcile_every_seconds=0, environment={"SECRET_MAX_AGE_SECONDS": "3600"}))
    with LocalStack(options) as stack, output_server() as outputs:
        stop_pollers(stack)
        dynamodb, sqs = clients.dynamodb_client(), clients.sqs_client()
        fetch_queue = stack.resource("FetchQueue")
        table = stack.jobs_table
        baseline_key = {"pk": {"S": "JOB#bench-baseline"}}
        dynamodb.put_item(TableName=table, Item={**baseline_key, "status": {"S": "submitted"}})

        def set_status(key: Mapping[str, Any]) -> None:
            dynamodb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET #s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": "reported"}},
            )

        def baseline() -> None:
            """The least the webhook must do: record the status, queue the fetch."""
            set_status(baseline_key)
            sqs.send_message(QueueUrl=fetch_queue, MessageBody='{"job_id":"bench-baseline"}')

        def one_delivery(size_mib: int) -> Callable[[], object]:
            job = submitted_job(stack, size_mib)
            event = webhook_event(stack, job, f"{outputs.url}/{size_mib}")
            return lambda: invoke_callback(stack, event)

        def forget(job_id: str) -> None:
            dynamodb.delete_item(TableName=table, Key={"pk": {"S": f"JOB#{job_id}"}})

        def timed(step: Callable[[], object]) -> float:
            started = time.perf_counter()
            step()
            return (time.perf_counter() - started) * 1000

        for _ in range(20):  # warm every path: the function's pipeline, clients, cached secret
            job = submitted_job(stack, 1)
            event = webhook_event(stack, job, f"{outputs.url}/1")
            invoke_callback(stack, event)
            forget(job.job_id)
            baseline()
        # moto and the whole stack share this process; a Lambda instance holds only its function. Without
        # this, every full collection walks moto's heap (100+ ms) and lands on whichever call is running.
        gc.collect()
        gc.freeze()

        sizes = (1, 1024)
        served_before = outputs.served_bytes
        project: dict[int, list[float]] = {size: [] for size in sizes}
        bare: dict[int, list[float]] = {size: [] for size in sizes}
        replayed: dict[int, list[float]] = {size: [] for size in sizes}
        its_write: dict[int, list[float]] = {size: [] for size in sizes}
        bare_set: dict[int, list[float]] = {size: [] for size in sizes}
        unconditional: dict[int, list[float]] = {size: [] for size in sizes}

        methods = {
            client.meta.service_model.service_name: {api: py for py, api in client.meta.method_to_api_mapping.items()}
            for client in (dynamodb, sqs)
        }
        made: list[clients.AwsCall] = []
        callback_id = stack.functions["callback"].spec.logical_id

        def keep(call: clients.AwsCall) -> None:
            if running_function.get() == callback_id:  # not the baselines' calls, made on the same clients
                made.append(call)

        undo = clients.observe_calls(keep)
        try:
            for index in range(webhooks):
                for size_mib in sizes if index % 2 == 0 else reversed(sizes):
                    job = submitted_job(stack, size_mib)
                    event = webhook_event(stack, job, f"{outputs.url}/{size_mib}")
                    row = dynamodb.get_item(TableName=table, Key={"pk": {"S": f"JOB#{job.job_id}"}})["Item"]
                    del made[:]
                    samples_before = len(project[size_mib])
                    steps: list[tuple[list[float], Callable[[], object]]] = [
                        (project[size_mib], partial(invoke_callback, stack, event)),
                        (bare[size_mib], baseline),
                    ]
                    for samples, step in steps if index % 2 == 0 else reversed(steps):
                        samples.append(timed(step))
                    assert len(project[size_mib]) == samples_before + 1
                    # The very requests the callback made, sent again bare on the same clients, with the
                    # job put back as it was: what remains between the two is the function's own work.
                    calls = [(c.service, c.operation, c.params) for c in made if c.service in methods]
                    forget(job.job_id)
                    dynamodb.put_item(TableName=table, Item=row)
                    replayed[size_mib].append(
                        timed(partial(replay, calls, {"dynamodb": dynamodb, "sqs": sqs}, methods))
                    )
                    # Its UpdateItem alone, the same without its condition, and a bare SET of the status
                    # on the same row: the price of the write's condition and of its update on this moto server.
                    writes = [call for call in calls if call[1] == "UpdateItem"]
                    for samples, step in (
                        (its_write[size_mib], partial(replay, writes, {"dynamodb": dynamodb}, methods)),
                        (
                            unconditional[size_mib],
                            partial(replay, without_condition(writes), {"dynamodb": dynamodb}, methods),
                        ),
                        (bare_set[size_mib], partial(set_status, {"pk": {"S": f"JOB#{job.job_id}"}})),
                    ):
                        dynamodb.put_item(TableName=table, Item=row)
                        samples.append(timed(step))
                    forget(job.job_id)
        finally:
            undo()
        served = outputs.served_bytes - served_before
        p99s: dict[int, float] = {}
        for size_mib in sizes:
            ours, least = project[size_mib], bare[size_mib]
            ratio = percentile(ours, 0.99) / percentile(least, 0.99)
            p99s[size_mib] = percentile(ours, 0.99)
            label = "1 MiB" if size_mib == 1 else "1 GiB"
            print(f"  output {label}: {timings('callback', ours)}")
            print(f"  output {label}: {timings('baseline UpdateItem + SendMessage', least)}")
            own = replayed[size_mib]
            print(f"  output {label}: {timings('reference: the requests the callback made, replayed bare', own)}")
            print(
                f"  output {label}: callback / its own requests bare: p99 "
                f"{percentile(ours, 0.99) / percentile(own, 0.99):.2f}x, median "
                f"{statistics.median(ours) / statistics.median(own):.2f}x (the function's own work, the local runtime)"
            )
            write, plain = its_write[size_mib], bare_set[size_mib]
            alone = "reference: the callback's UpdateItem alone, replayed"
            print(f"  output {label}: {timings(alone, write)}")
            loose = unconditional[size_mib]
            print(f"  output {label}: {timings('reference: the same UpdateItem without its condition', loose)}")
            print(f"  output {label}: {timings('reference: a bare SET of the status on the same row', plain)}")
            print(
                f"  output {label}: its write / a bare SET on the same row: median "
                f"{statistics.median(write) / statistics.median(plain):.2f}x (moto working through the write: of the "
                f"{statistics.median(write) - statistics.median(plain):.1f} ms more, the condition "
                f"{statistics.median(write) - statistics.median(loose):.1f} ms, the update "
                f"{statistics.median(loose) - statistics.median(plain):.1f} ms)"
            )
            report.add(
                Goal(
                    f"callback, warm, p99 ({label} output)",
                    f"{percentile(ours, 0.99):.1f} ms (median {statistics.median(ours):.1f})",
                    f"UpdateItem + SendMessage {percentile(least, 0.99):.1f} ms"
                    f" (median {statistics.median(least):.1f})",
                    f"{ratio:.2f}x",
                    "<= 1.3x",
                    ratio <= 1.3,
                )
            )
        print(f"  bytes the output server served during all {2 * webhooks} callbacks: {served}")
        medians = {size: statistics.median(project[size]) for size in sizes}
        print(
            f"  1 GiB vs 1 MiB output: callback median {medians[1024]:.1f} vs {medians[1]:.1f} ms, p99 "
            f"{p99s[1024]:.1f} vs {p99s[1]:.1f} ms (the two sizes interleaved; the tail is this machine's noise)"
        )
        bench_webhook_calls(report, stack, outputs.url)
        gc.unfreeze()


def bench_webhook_calls(report: Report, stack: LocalStack, outputs_url: str) -> None:
    print("\n2. AWS calls per webhook (every call the callback function made, recorded)")
    logical_id = stack.functions["callback"].spec.logical_id
    counts: dict[str, list[str]] = {}
    job = submitted_job(stack, 1)
    first = webhook_event(stack, job, f"{outputs_url}/1", webhook_id=f"msg_{uuid.uuid4().hex}")
    deliveries = [
        ("accepted", first),
        ("replay (same id)", first),
        ("same body, new id", webhook_event(stack, job, f"{outputs_url}/1")),
    ]
    for label, event in deliveries:
        with CallRecorder() as recorder:
            answer = invoke_callback(stack, event)
        calls = recorder.by_function().get(logical_id, [])
        counts[label] = [f"{c.service}.{c.operation}" for c in calls]
        print(f"  {label:<18} outcome {outcome_of(answer):<17} {len(calls)} calls: {', '.join(counts[label])}")
    accepted, replay = len(counts["accepted"]), len(counts["replay (same id)"])
    report.add(
        Goal(
            "AWS calls per accepted webhook",
            str(accepted),
            "2 (UpdateItem + SendMessage)",
            f"{accepted / 2:.1f}x",
            "<= 2",
            accepted <= 2,
        )
    )
    report.add(Goal("AWS calls per replayed webhook", str(replay), "-", "-", "<= 1", replay <= 1))


# ---- 3: the AWS bill per job -------------------------------------------------------------------


@dataclass(frozen=True)
class Drop:
    name: str
    mode: str  # "folder" or "manifest"
    files: dict[str, bytes]
    options: dict[str, Any]


def batch(jobs: int) -> list[Drop]:
    duo = portrait_png(people=2, width=640, height=360)
    kinds = [
        ("single", {"image.png": portrait_png(), "audio.wav": voice_wav(3.0)}),
        ("multi", {"image.png": duo, "left_audio.wav": voice_wav(2.0, 200), "right_audio.wav": voice_wav(2.5, 100)}),
        ("v2v", {"video.mp4": portrait_mp4(1.0), "audio.wav": voice_wav(2.0)}),
    ]
    drops = []
    for index in range(jobs):
        kind, files = kinds[index % len(kinds)]
        mode = "folder" if index % 2 == 0 else "manifest"
        options: dict[str, Any] = {"resolution": "720p"} if index % 4 == 3 else {}
        drops.append(Drop(f"cost-{index:02d}-{kind}-{mode}", mode, files, options))
    return drops


def drop(stack: LocalStack, case: Drop) -> int:
    """Uploads the drop as a user would; returns how many objects landed under inbox/ (one notification each)."""
    if case.mode == "folder":
        stack.drop_folder(case.name, case.files, case.options)
        return len(case.files) + 1  # and its job.json
    inputs = {}
    for filename, body in case.files.items():
        key = f"library/{case.name}/{filename}"
        stack.put(key, body)
        inputs[filename.rsplit(".", 1)[0]] = key
    stack.put(f"inbox/{case.name}.json", json.dumps({"inputs": inputs, **case.options}).encode())
    return 1


class LogBytes(logging.Handler):
    """Bytes each function would send to CloudWatch Logs: its records as Powertools writes them (JSON)."""

    def __init__(self) -> None:
        super().__init__()
        from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

        self.setFormatter(LambdaPowertoolsFormatter())
        self.by_function: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        function = running_function.get()
        if function is not None:
            self.by_function[function] += len(self.format(record).encode()) + 1


@dataclass
class ReadBytes:
    """Bytes of items each DynamoDB read returned, by function and operation (reads are priced by size).

    The request is what the call observer saw last on this thread: the shared clients' observers run
    before this handler, which is registered on the client after them."""

    items: list[tuple[str, str, int, bool]] = field(default_factory=list)  # function, operation, bytes, consistent
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_request: threading.local = field(default_factory=threading.local)

    def observe(self, parsed: Mapping[str, Any], model: Any, **kwargs: Any) -> None:
        function = running_function.get()
        if function is None or model.name not in READ_OPERATIONS:
            return
        request: Mapping[str, Any] = getattr(self.last_request, "params", {})
        consistent = bool(request.get("ConsistentRead")) and "IndexName" not in request
        found: list[Any] = []
        if "Item" in parsed:
            found.append(parsed["Item"])
        found += list(parsed.get("Items", []))
        responses = parsed.get("Responses")
        if isinstance(responses, dict):
            for rows in responses.values():
                found += list(rows)
        size = sum(item_bytes(item) for item in found)
        with self.lock:
            self.items.append((function, model.name, size, consistent))


READ_OPERATIONS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})


def item_bytes(item: Mapping[str, Any]) -> int:
    """DynamoDB's size of an item in its wire form: attribute names plus values, as AWS counts them."""
    return sum(len(name.encode()) + value_bytes(value) for name, value in item.items())


def value_bytes(value: Mapping[str, Any]) -> int:
    kind, content = next(iter(value.items()))
    if kind == "S":
        return len(str(content).encode())
    if kind == "N":
        digits = str(content).lstrip("-").replace(".", "").lstrip("0") or "0"
        return 1 + (len(digits) + 1) // 2
    if kind == "B":
        return len(content)
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind == "M":
        return 3 + sum(1 + len(key.encode()) + value_bytes(inner) for key, inner in content.items())
    if kind == "L":
        return 3 + sum(1 + value_bytes(inner) for inner in content)
    if kind in {"SS", "NS", "BS"}:
        return sum(value_bytes({kind[0]: member}) for member in content)
    return len(json.dumps(content, default=str))


def updated_attributes(params: Mapping[str, Any]) -> set[str]:
    expression = str(params.get("UpdateExpression", ""))
    names = dict(params.get("ExpressionAttributeNames") or {})
    found = set()
    for token in re.findall(r"(#?[A-Za-z_][A-Za-z0-9_]*)\s*(?:=|,|$)", expression.replace("REMOVE", ",")):
        found.add(str(names.get(token, token)))
    return found


@dataclass(frozen=True)
class Index:
    name: str
    keys: frozenset[str]
    projection: str
    included: frozenset[str]


def jobs_indexes(stack: LocalStack) -> list[Index]:
    table = stack.template.resolve(stack.template.resources["JobsTable"]["Properties"])
    found = []
    for index in table.get("GlobalSecondaryIndexes", []):
        projection = index.get("Projection", {})
        found.append(
            Index(
                index["IndexName"],
                frozenset(key["AttributeName"] for key in index["KeySchema"]),
                projection.get("ProjectionType", "ALL"),
                frozenset(projection.get("NonKeyAttributes", [])),
            )
        )
    return found


WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})
ItemRef = tuple[str, str]  # table, key in wire form


def written_items(
    params: Mapping[str, Any], operation: str, key_names: Mapping[str, list[str]]
) -> list[tuple[str, str, ItemRef]]:
    """(kind, table, item) for each item a write names: Put, Update, Delete or ConditionCheck."""

    def ref(table: str, body: Mapping[str, Any]) -> ItemRef:
        source = body.get("Key") or body.get("Item") or {}
        key = {name: source[name] for name in key_names.get(table, ["pk"]) if name in source}
        return table, json.dumps(key, sort_keys=True)

    found: list[tuple[str, str, ItemRef]] = []
    if operation == "TransactWriteItems":
        for item in params.get("TransactItems", []):
            for kind, body in item.items():
                table = str(body.get("TableName", ""))
                found.append((kind, table, ref(table, body)))
    elif operation == "BatchWriteItem":
        for table, requests in (params.get("RequestItems") or {}).items():
            for request in requests:
                for kind, body in request.items():
                    found.append(("Put" if kind == "PutRequest" else "Delete", table, ref(table, body)))
    elif operation in WRITE_OPERATIONS:
        kind = {"PutItem": "Put", "UpdateItem": "Update", "DeleteItem": "Delete"}[operation]
        table = str(params.get("TableName", ""))
        found.append((kind, table, ref(table, params)))
    return found


@dataclass(frozen=True)
class Billed:
    """What one write is billed for on one item: its larger size, and the indexes that hold it."""

    size: int
    attributes: frozenset[str]  # of the item before or after the write
    written: bool = True  # a refused write (a failed condition, a cancelled transaction) reaches no index


@dataclass
class WriteSizes:
    """Every item's size just before and just after each write, read back from the table the moment
    the write answered (DynamoDB bills a write by the larger of the two)."""

    read_back: Callable[[ItemRef], tuple[int, frozenset[str]]]
    current: dict[ItemRef, tuple[int, frozenset[str]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, items: list[tuple[str, str, ItemRef]], written: bool = True) -> dict[ItemRef, Billed]:
        billed = {}
        for _kind, _table, item in items:
            after = self.read_back(item)
            with self.lock:
                before = self.current.get(item, (0, frozenset()))
                self.current[item] = after
            billed[item] = Billed(max(before[0], after[0]), before[1] | after[1], written)
        return billed


def write_units(
    params: Mapping[str, Any],
    operation: str,
    key_names: Mapping[str, list[str]],
    billed: Mapping[ItemRef, Billed],
    indexes: Mapping[str, list[Index]],
) -> float:
    """Write request units of one write: 1 per KB of the item (the larger of before and after), 2 per KB
    in a transaction, plus each index holding the item (a changed index key is a delete and a put there)."""
    if operation == "BatchWriteItem":
        return float(sum(len(requests) for requests in (params.get("RequestItems") or {}).values()))
    if operation == "TransactWriteItems":
        bodies = [body for entry in params.get("TransactItems", []) for body in entry.values()]
    else:
        bodies = [params]
    factor = 2 if operation == "TransactWriteItems" else 1
    total = 0.0
    for (kind, table, item), body in zip(written_items(params, operation, key_names), bodies, strict=True):
        if kind == "ConditionCheck":
            total += factor
            continue
        seen = billed.get(item, Billed(0, frozenset()))
        size_kb = max(1, math.ceil(seen.size / 1024))
        total += factor * size_kb
        changed = updated_attributes(body) if kind == "Update" else None
        for index in indexes.get(table, []) if seen.written else []:
            if not index.keys <= seen.attributes:
                continue  # the item is not in this index
            projected_kb = size_kb if index.projection == "ALL" else 1
            if changed is None:  # a new, replaced or deleted item
                total += projected_kb
            elif changed & index.keys:
                total += 2 * projected_kb  # out of its old place in the index, into its new one
            elif index.projection == "ALL" or changed & index.included:
                total += projected_kb
    return total


@dataclass
class CostLine:
    function: str
    service: str
    operation: str
    requests: float = 0.0
    units: float = 0.0  # priced units (requests, request units or GB)
    price_key: str = ""
    usd: float = 0.0


def s3_price_key(operation: str, tiers: Mapping[str, list[str]]) -> str:
    if operation in tiers["tier1"]:
        return "s3.tier1"
    if operation in tiers["free"]:
        return "s3.free"
    return "s3.tier2"


def bench_cost(report: Report, jobs: int) -> dict[str, list[str]]:
    """Returns the AWS services each function was seen calling (for the cold-start baselines)."""
    prices = json.loads(PRICES_FILE.read_text())
    per_million: dict[str, float] = prices["usd_per_million"]
    print(f"\n3. The AWS bill per job: {jobs} jobs through the local stack, every request counted and priced")
    print(f"   (us-east-1 list prices from {PRICES_FILE.name}, checked {prices['checked']})")
    options = quiet_stack(StackOptions(reconcile_every_seconds=2.0, environment={"SECRET_MAX_AGE_SECONDS": "300"}))
    params_seen: list[tuple[str, str, str, Mapping[str, Any], Mapping[ItemRef, Billed]]] = []
    invocations: Counter[str] = Counter()
    notifications = 0
    with LocalStack(options) as stack:
        names = {fn.spec.logical_id: name for name, fn in stack.functions.items()}

        reads = ReadBytes()
        described = (
            stack.aws.dynamodb.describe_table(TableName=t)["Table"]
            for t in stack.aws.dynamodb.list_tables()["TableNames"]
        )
        key_names = {table["TableName"]: [k["AttributeName"] for k in table["KeySchema"]] for table in described}

        def read_back(item: ItemRef) -> tuple[int, frozenset[str]]:
            table, key = item
            found = stack.aws.dynamodb.get_item(TableName=table, Key=json.loads(key), ConsistentRead=True).get("Item")
            return (item_bytes(found), frozenset(found)) if found else (0, frozenset())

        sizes = WriteSizes(read_back)

        def keep(call: clients.AwsCall) -> None:
            function = running_function.get()
            if function is not None and not call.presigned:
                billed: Mapping[ItemRef, Billed] = {}
                if call.service == "dynamodb" and call.operation in WRITE_OPERATIONS:
                    written = call.status is not None and call.status < 300
                    billed = sizes.observe(written_items(call.params, call.operation, key_names), written)
                params_seen.append((names.get(function, function), call.service, call.operation, call.params, billed))
                if call.service == "dynamodb":
                    reads.last_request.params = call.params

        for name, local in stack.functions.items():
            local.invoke = counting(local.invoke, name, invocations)  # type: ignore[method-assign]
        log_bytes = LogBytes()
        core_records = logging.getLogger(core_logger.name)
        core_records.addHandler(log_bytes)
        dynamodb = clients.dynamodb_client()
        dynamodb.meta.events.register("after-call.dynamodb", reads.observe)
        undo = clients.observe_calls(keep)
        wavespeed_calls = count_wavespeed_calls()
        try:
            cases = batch(jobs)
            for case in cases:
                notifications += drop(stack, case)
            finished = [stack.wait_for(case.name, timeout=180) for case in cases]
            time.sleep(3)  # the sweep after the last delivery, as it runs on its schedule
        finally:
            undo()
            core_records.removeHandler(log_bytes)
            wavespeed_calls.stop()
        statuses = Counter(job.status.value for job in finished)
        print(f"   jobs: {dict(statuses)}; models: {dict(Counter(c.name.split('-')[2] for c in cases))}")
        jobs_table = stack.jobs_table
        indexes = jobs_indexes(stack)
        indexes_of_table = {jobs_table: indexes}
        rows = [
            item_bytes(item)
            for item in stack.aws.dynamodb.scan(TableName=jobs_table)["Items"]
            if str(item.get("pk", {}).get("S", "")).startswith("JOB#")
        ]
        row_bytes = int(statistics.median(rows)) if rows else 0
        webhooks = len(stack.standin.webhook_deliveries)
        queue_of_function = {
            "submit": stack.resource("SubmitQueue"),
            "fetch": stack.resource("FetchQueue"),
        }

    lines: dict[tuple[str, str, str], CostLine] = {}

    def line(function: str, service: str, operation: str, price_key: str) -> CostLine:
        return lines.setdefault(
            (function, service, operation), CostLine(function, service, operation, price_key=price_key)
        )

    services: dict[str, set[str]] = defaultdict(set)
    secret_pairs: set[tuple[str, str]] = set()
    for function, service, operation, params, billed in params_seen:
        services[function].add(service)
        if service == "secretsmanager":
            secret_pairs.add((function, str(params.get("SecretId", ""))))
            continue  # priced below, as deployed instances read them
        if service == "s3":
            entry = line(function, service, operation, s3_price_key(operation, prices["s3_request_tiers"]))
            entry.requests += 1
            entry.units += 1
        elif service == "dynamodb":
            if operation in READ_OPERATIONS:
                entry = line(function, service, operation, "dynamodb.read_request_unit")
                entry.requests += 1
            else:
                entry = line(function, service, operation, "dynamodb.write_request_unit")
                entry.requests += 1
                entry.units += write_units(params, operation, key_names, billed, indexes_of_table)
        elif service == "sqs":
            entry = line(function, service, operation, "sqs.request")
            entry.requests += 1
            entry.units += 1
            if operation == "SendMessage" and params.get("QueueUrl") in queue_of_function.values():
                # Lambda's event source mapping receives and deletes each message it hands over.
                consumer = next(f for f, url in queue_of_function.items() if url == params.get("QueueUrl"))
                for esm in ("ReceiveMessage (event source)", "DeleteMessage (event source)"):
                    extra = line(consumer, "sqs", esm, "sqs.request")
                    extra.requests += 1
                    extra.units += 1
        elif service == "events":
            entry = line(function, service, operation, "events.custom_event")
            entry.requests += 1
            entry.units += len(params.get("Entries", [])) or 1
        elif service == "sns":
            entry = line(function, service, operation, "sns.publish")
            entry.requests += 1
            entry.units += 1
    for logical_id, operation, size, consistent in reads.items:
        entry = line(names.get(logical_id, logical_id), "dynamodb", operation, "dynamodb.read_request_unit")
        entry.units += max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)
    # S3 puts each inbox object's notification on the submit queue; the event source hands it over.
    for operation in ("SendMessage (S3 notification)", "ReceiveMessage (event source)", "DeleteMessage (event source)"):
        entry = line("submit", "sqs", operation, "sqs.request")
        entry.requests += notifications
        entry.units += notifications
    entry = line("callback", "apigateway", "HTTP API request", "apigateway.http_api_request")
    entry.requests = entry.units = float(webhooks)
    for function, _secret in sorted(secret_pairs):
        # Deployed, a cold instance reads each secret it uses once; assume every job meets cold instances.
        entry = line(function, "secretsmanager", "GetSecretValue (cold instance)", "secretsmanager.api_call")
        entry.requests += jobs
        entry.units += jobs
    for function, count in invocations.items():
        entry = line(function, "lambda", "Invoke", "lambda.request")
        entry.requests = entry.units = float(count)
        logged = log_bytes.by_function.get(stack_logical(function, names), 0)
        logged += count * (PLATFORM_LOG_BYTES_PER_INVOCATION + METRICS_LOG_BYTES_PER_INVOCATION)
        logs = line(function, "logs", "ingestion (GB)", "logs.ingestion")
        logs.requests = count
        logs.units = logged / 1024**3

    total = 0.0
    for entry in lines.values():
        if entry.price_key == "logs.ingestion":
            entry.usd = entry.units * prices["usd_per_gb"]["logs.ingestion"]
        else:
            entry.usd = entry.units * per_million[entry.price_key] / 1_000_000
        total += entry.usd
    print(
        f"   per job ({jobs} jobs; final job rows {row_bytes} bytes (median); indexes "
        f"{', '.join(f'{i.name}:{i.projection}' for i in indexes)})"
    )
    print(f"   {'function':<10} {'service':<15} {'request':<32} {'req/job':>8} {'units/job':>10} {'$/job':>12}")
    for entry in sorted(lines.values(), key=lambda e: -e.usd):
        units = f"{entry.units / jobs:.2e}" if entry.price_key == "logs.ingestion" else f"{entry.units / jobs:.2f}"
        print(
            f"   {entry.function:<10} {entry.service:<15} {entry.operation:<32} {entry.requests / jobs:>8.2f}"
            f" {units:>10} {entry.usd / jobs:>12.9f}"
        )
    by_service: dict[str, float] = defaultdict(float)
    for entry in lines.values():
        by_service[entry.service] += entry.usd / jobs
    per_job = Decimal(str(total / jobs))
    requests = sum(e.requests for e in lines.values() if e.service != "logs") / jobs
    print("   by service: " + ", ".join(f"{s} ${v:.7f}" for s, v in sorted(by_service.items(), key=lambda x: -x[1])))
    print(
        "   assumptions: Lambda duration, data transfer and storage are not per-request costs and are left out; "
        "every job meets cold instances (one read of each secret per function per job); the event source "
        "mapping's receive and delete count once per message; logs are Powertools' JSON lines plus "
        f"{PLATFORM_LOG_BYTES_PER_INVOCATION + METRICS_LOG_BYTES_PER_INVOCATION} bytes per invocation"
    )
    secrets_per_job = by_service.get("secretsmanager", 0.0)
    print(
        "   with warm instances (secrets served from their 300 s cache, no reads per job): "
        f"${per_job - Decimal(str(secrets_per_job)):.7f} per job"
    )
    report.add(
        Goal(
            "AWS cost per job, list prices",
            f"${per_job:.7f} ({requests:.1f} requests per job)",
            "-",
            f"{per_job / COST_GOAL_USD:.2f}x of goal",
            f"<= ${COST_GOAL_USD}",
            per_job <= COST_GOAL_USD,
        )
    )
    api_calls = sum(n for route, n in wavespeed_calls.routes.items() if route != "output download")
    print(
        "   WaveSpeed requests per job: "
        + ", ".join(f"{route} {n / jobs:.1f}" for route, n in sorted(wavespeed_calls.routes.items()))
    )
    report.add(
        Goal(
            "WaveSpeed API calls per job",
            f"{api_calls / jobs:.1f} (and {wavespeed_calls.routes.get('output download', 0) / jobs:.1f}"
            " output download)",
            "-",
            "-",
            "keep 2",
            api_calls / jobs <= 2,
        )
    )
    calls_per_job = Counter(s for _f, s, _o, _p, _b in params_seen if s != "secretsmanager")
    print(
        "   AWS calls per job by service: " + ", ".join(f"{s} {n / jobs:.1f}" for s, n in calls_per_job.most_common())
    )
    return {function: sorted(found) for function, found in services.items()}


@dataclass
class WaveSpeedCalls:
    """Requests the stand-in answered, by route: its API, and the output downloads."""

    routes: Counter[str] = field(default_factory=Counter)
    stop: Callable[[], None] = lambda: None


def count_wavespeed_calls() -> WaveSpeedCalls:
    from wavespeed_standin import server

    handler: Any = server._Handler  # the stand-in's request handler, wrapped for counting
    api_call, stream_output = handler._api_call, handler._stream_output
    counted = WaveSpeedCalls()
    lock = threading.Lock()

    def api(self: Any, route: str, raw: bytes, query: str) -> Any:
        with lock:
            label = "result" if server.RESULT_PATH.match(route) else route
            counted.routes["submit" if route.startswith("wavespeed-ai/") else label] += 1
        return api_call(self, route, raw, query)

    def output(self: Any, task_id: str) -> Any:
        with lock:
            counted.routes["output download"] += 1
        return stream_output(self, task_id)

    handler._api_call, handler._stream_output = api, output

    def stop() -> None:
        handler._api_call, handler._stream_output = api_call, stream_output

    counted.stop = stop
    return counted


def counting(invoke: Callable[..., Any], name: str, invocations: Counter[str]) -> Callable[..., Any]:
    """``invoke`` that counts its calls: each is one Lambda invocation (a request, and log lines)."""

    def counted(*args: Any, **kwargs: Any) -> Any:
        invocations[name] += 1
        return invoke(*args, **kwargs)

    return counted


def stack_logical(function: str, names: Mapping[str, str]) -> str:
    return next((logical for logical, name in names.items() if name == function), function)


# ---- 4: cold starts ----------------------------------------------------------------------------

# Only what the layer carries can be imported, as in Lambda: the venv also holds the CLI's packages
# (rich, click, pygments), which httpx imports for its command line when it finds them.
COLD_START = """
import sys, time
blocked = frozenset({blocked!r})
class LayerOnly:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, LayerOnly())
started = time.perf_counter()
{body}
print((time.perf_counter() - started) * 1000)
"""


def not_in_layer() -> list[str]:
    """Top-level modules of the installed distributions the layer's lock does not name."""
    from importlib.metadata import packages_distributions

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    lock = ROOT / "layers" / "core" / "requirements.txt"
    carried = {normal(row.split("==")[0]) for row in lock.read_text().splitlines() if "==" in row}
    carried.add("infinitetalk-pipeline")
    found = packages_distributions()
    return sorted(top for top, names in found.items() if not any(normal(name) in carried for name in names))


PROJECT_BODY = """
import importlib.util
spec = importlib.util.spec_from_file_location("app", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
pipeline = module.get_pipeline()
for part in {parts!r}:
    getattr(pipeline, part)
from infinitetalk_core import clients
for extra in {extra!r}:
    getattr(clients, extra)()
if {secrets!r}:
    from infinitetalk_core.pipeline import secrets_provider
    secrets_provider()
"""

BASELINE_BODY = """
import boto3
for service in {services!r}:
    boto3.client(service)
"""

# The least any function of this stack can import: the baseline, plus pydantic (every boundary is a
# model) and Powertools' logger and metrics (every handler is wrapped in them).
FLOOR_BODY = (
    BASELINE_BODY
    + """
import pydantic
from aws_lambda_powertools import Logger, Metrics
Logger(service="infinitetalk")
Metrics(namespace="InfiniteTalk")
"""
)
# The floor and one pydantic model defined and used: what reading any event into a model costs first.
MODEL_FLOOR_BODY = (
    FLOOR_BODY
    + """
class Event(pydantic.BaseModel):
    name: str
    size: int = 0
Event.model_validate({{"name": "x"}})
"""
)


NOT_IN_LAYER: list[str] = []


def cold_start_ms(body: str) -> float:
    environment = {
        "PATH": "/usr/bin:/bin",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_METRICS_DISABLED": "true",
        # What the template gives every function; nothing is called, so the names need not exist.
        "MEDIA_BUCKET": "media",
        "JOBS_TABLE": "jobs",
        "LEDGER_TABLE": "ledger",
        "SUBMIT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/submit",
        "FETCH_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/fetch",
        "EVENT_BUS_NAME": "jobs",
        "API_KEY_SECRET_ID": "api-key",
        "WEBHOOK_SECRET_ID": "webhook-secret",
        "PYDANTIC_DISABLE_PLUGINS": "__all__",
    }
    answer = subprocess.run(
        [sys.executable, "-c", COLD_START.format(body=body, blocked=NOT_IN_LAYER)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    if answer.returncode != 0:
        raise RuntimeError(answer.stderr[-2000:])
    return float(answer.stdout.strip().splitlines()[-1])


def bench_cold_start(report: Report, services: Mapping[str, list[str]], repetitions: int) -> None:
    NOT_IN_LAYER[:] = not_in_layer()
    print(
        f"\n4. Cold start (import + build, fresh interpreter, only the layer's packages importable) vs import boto3"
        f" + the clients used ({repetitions} each)"
    )
    for function in ("callback", "submit", "fetch", "reconcile"):
        used = services.get(function) or DEFAULT_SERVICES[function]
        parts = [PART_OF_SERVICE[s] for s in used if s in PART_OF_SERVICE]
        if function in HTTP_FUNCTIONS:
            parts.append("wavespeed")
        extra = [f"{s}_client" for s in used if s == "sns"]
        project_body = PROJECT_BODY.format(
            path=str(ROOT / "functions" / function / "app.py"),
            parts=parts,
            extra=extra,
            secrets="secretsmanager" in used,
        )
        baseline_body = BASELINE_BODY.format(services=used)
        floor_body = FLOOR_BODY.format(services=used)
        model_floor_body = MODEL_FLOOR_BODY.format(services=used)
        bodies = (project_body, baseline_body, floor_body, model_floor_body)
        for body in bodies:
            cold_start_ms(body)  # compiled files written, disk cache warm, for all alike
        samples: list[list[float]] = [[], [], [], []]
        for index in range(repetitions):
            order = list(zip(samples, bodies, strict=True))
            for taken, body in order if index % 2 == 0 else reversed(order):
                taken.append(cold_start_ms(body))
        project, bare, floor, model_floor = samples
        ratio = statistics.median(project) / statistics.median(bare)
        print(f"  {function:<9} builds {', '.join(parts)}; {timings('project', project)}; {timings('baseline', bare)}")
        for label, values in (
            ("floor (baseline + pydantic + Powertools logger and metrics)", floor),
            ("floor and one pydantic model used", model_floor),
        ):
            print(
                f"  {'':<9} {timings(label, values)}: {statistics.median(values) / statistics.median(bare):.2f}x"
                f" the baseline; the project is {statistics.median(project) / statistics.median(values):.2f}x it"
            )
        report.add(
            Goal(
                f"cold start, {function}",
                f"{statistics.median(project):.0f} ms (p99 {percentile(project, 0.99):.0f})",
                f"boto3 + {len(used)} clients {statistics.median(bare):.0f} ms (p99 {percentile(bare, 0.99):.0f})",
                f"{ratio:.2f}x",
                "<= 1.2x",
                ratio <= 1.2,
            )
        )


# ---- 5: fetch memory and throughput ------------------------------------------------------------


def fetch_child(mode: str, size_mib: int, outputs_url: str, endpoint: str) -> None:
    """One transfer in this fresh process; prints seconds and peak RSS growth in MiB."""
    from types import SimpleNamespace

    from infinitetalk_core.delivery import store_outputs
    from infinitetalk_core.outbound import OutputDownloader, OutputPolicy
    from infinitetalk_core.pipeline import Pipeline
    from infinitetalk_core.storage import MediaBucket
    from infinitetalk_core.wavespeed import Prediction
    from infinitetalk_core.wavespeed_client import WaveSpeedClient

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's placeholder credentials
    )
    http = httpx.Client(timeout=120)
    outputs = OutputDownloader.build(OutputPolicy.parse(outputs_url, max_bytes=size_mib * MIB), httpx.Timeout(120))
    wavespeed = WaveSpeedClient("http://unused", lambda: "", http, outputs=outputs)
    pipeline = cast(Pipeline, SimpleNamespace(bucket=MediaBucket(s3, "bench-fetch"), wavespeed=wavespeed))

    def project(size: int) -> None:
        prediction = Prediction(id=uuid.uuid4().hex, status="completed", outputs=[f"{outputs_url}/{size}.mp4"])
        store_outputs(f"outputs/bench-{uuid.uuid4().hex[:8]}/", prediction, pipeline)

    def baseline(size: int) -> None:
        with http.stream("GET", f"{outputs_url}/{size}.mp4") as response:
            s3.upload_fileobj(
                cast(IO[bytes], IterStream(response.iter_bytes())), "bench-fetch", f"plain/{uuid.uuid4().hex}.mp4"
            )

    run = project if mode == "project" else baseline
    run(16)  # everything loaded and pooled before the measured transfer
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS mark
    before = rss_kib("VmRSS")
    started = time.perf_counter()
    run(size_mib)
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "growth_mib": (rss_kib("VmHWM") - before) / 1024}))


class IterStream:
    """A read()-able file over an iterator of byte chunks, as a plain script would write it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def rss_kib(field_name: str) -> int:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(field_name + ":"):
            return int(row.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/self/status")


@contextmanager
def moto_process() -> Iterator[str]:
    """moto's server in its own process, so the 1 GiB it stores is not in the measured process."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    binary = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def bench_fetch(report: Report, size_mib: int, repetitions: int) -> None:
    from infinitetalk_core.storage import STREAMING_TRANSFER

    part_mib = STREAMING_TRANSFER.multipart_chunksize / MIB
    print(f"\n5. Fetch: a {size_mib} MiB output streamed into S3 (fresh process each, {repetitions} each, interleaved)")
    with moto_process() as endpoint, output_server() as outputs:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's placeholder credentials
        )
        s3.create_bucket(Bucket="bench-fetch")
        results: dict[str, list[dict[str, float]]] = {"project": [], "baseline": []}
        for index in range(repetitions):
            order = ["project", "baseline"] if index % 2 == 0 else ["baseline", "project"]
            for mode in order:
                answer = subprocess.run(
                    [sys.executable, __file__, "--fetch-child", mode, str(size_mib), outputs.url, endpoint],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    timeout=900,
                    check=False,
                )
                if answer.returncode != 0:
                    raise RuntimeError(answer.stderr[-2000:])
                results[mode].append(json.loads(answer.stdout.strip().splitlines()[-1]))
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench-fetch"):
                    for item in page.get("Contents", []):
                        s3.delete_object(Bucket="bench-fetch", Key=item["Key"])
    growth = {mode: [r["growth_mib"] for r in runs] for mode, runs in results.items()}
    speed = {mode: [size_mib / r["seconds"] for r in runs] for mode, runs in results.items()}
    for mode in ("project", "baseline"):
        print(
            f"  {mode:<8} peak RSS growth median {statistics.median(growth[mode]):.1f} MiB"
            f" (max {max(growth[mode]):.1f});"
            f" throughput median {statistics.median(speed[mode]):.0f} MiB/s"
        )
    limit = part_mib + 16
    worst = max(growth["project"])
    report.add(
        Goal(
            f"fetch, peak RSS growth, {size_mib} MiB output",
            f"{worst:.1f} MiB (worst of {repetitions}; part {part_mib:.0f} MiB)",
            f"plain httpx -> upload_fileobj {statistics.median(growth['baseline']):.1f} MiB",
            "-",
            f"<= one part + 16 MiB = {limit:.0f} MiB",
            worst <= limit,
        )
    )
    ratio = statistics.median(speed["project"]) / statistics.median(speed["baseline"])
    report.add(
        Goal(
            f"fetch throughput, {size_mib} MiB",
            f"{statistics.median(speed['project']):.0f} MiB/s",
            f"plain httpx stream -> upload_fileobj {statistics.median(speed['baseline']):.0f} MiB/s",
            f"{ratio:.2f}x",
            ">= 1.0x",
            ratio >= 1.0,
        )
    )


# ---- the run -----------------------------------------------------------------------------------


# ---- 6: a 1,000-file drop at a set rate --------------------------------------------------------


def job_statuses(stack: LocalStack) -> Counter[str]:
    pages = stack.aws.dynamodb.get_paginator("scan").paginate(TableName=stack.jobs_table)
    return Counter(
        str(item["status"]["S"])
        for page in pages
        for item in page.get("Items", [])
        if str(item.get("pk", {}).get("S", "")).startswith("JOB#")
    )


@dataclass(frozen=True)
class RateRun:
    files: int
    seconds_to_drop: float
    passed_at: list[float]
    refused: int
    statuses: Counter[str]
    invocations: int
    peak_concurrency: int
    throttles: int

    @property
    def span(self) -> float:
        return self.passed_at[-1] - self.passed_at[0] if len(self.passed_at) > 1 else 0.0

    @property
    def per_second(self) -> float:
        return (len(self.passed_at) - 1) / self.span if self.span > 0 else 0.0

    @property
    def lost(self) -> int:
        return self.files - self.statuses.get("submitted", 0)

    def windows(self) -> list[float]:
        """The pace in each whole 10 s window: steady, not an average of bursts."""
        if not self.passed_at:
            return []
        starts = frange(self.passed_at[0], self.passed_at[-1] - 10, 10)
        return [sum(1 for t in self.passed_at if start <= t < start + 10) / 10 for start in starts]

    def line(self) -> str:
        windows = self.windows()
        return (
            f"dropped in {self.seconds_to_drop:.1f} s; {len(self.passed_at)} submissions passed over {self.span:.1f} s:"
            f" {self.per_second:.2f} per second; 10 s windows {min(windows, default=0):.1f}-"
            f"{max(windows, default=0):.1f} per second; 429s {self.refused}; jobs {dict(self.statuses)};"
            f" submit invocations {self.invocations}, peak at once {self.peak_concurrency}, throttled {self.throttles}"
        )


def rate_run(files: int, rate: float, concurrency: int, account_limit: float) -> RateRun:
    options = quiet_stack(
        StackOptions(
            parameters={
                "SubmitRatePerSecond": f"{rate:g}",
                "SubmitConcurrency": str(concurrency),
                "MonthlyBudgetUsd": "0",  # no budget: a thousand jobs would pass the default one
            },
            # Tasks stay in processing: the figure is the submissions, not the renders after them.
            standin={"rate_limit_per_second": account_limit, "min_processing_seconds": 3600},
            reconcile_every_seconds=0,
        )
    )
    with LocalStack(options) as stack:
        stack.put("library/rate/image.png", portrait_png())
        stack.put("library/rate/audio.wav", voice_wav(1.0))
        manifest = json.dumps({"inputs": {"image": "library/rate/image.png", "audio": "library/rate/audio.wav"}})
        started = time.monotonic()
        for index in range(files):
            stack.put(f"inbox/rate-{index:04d}.json", manifest.encode())
        dropped = time.monotonic() - started
        deadline = time.monotonic() + max(180.0, 3 * files / (rate or account_limit))
        # Watched at the stand-in: a scan of the jobs table would hold up moto's DynamoDB, which answers
        # one request at a time, and so the very submissions being timed.
        while stack.standin.submit_count < files and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)  # the last answers recorded
        submit = stack.functions["submit"].counts
        return RateRun(
            files=files,
            seconds_to_drop=dropped,
            passed_at=list(stack.standin.rate_limit.passed_at),
            refused=stack.standin.rate_limit.refused,
            statuses=job_statuses(stack),
            invocations=submit.invocations,
            peak_concurrency=submit.peak_concurrency,
            throttles=submit.throttles,
        )


def bench_drop_rate(report: Report, files: int, rate: float, concurrency: int, account_limit: float) -> None:
    print(
        f"\n6. A {files:,}-file drop: one manifest each, submitted at {rate:g} per second with {concurrency} submit"
        f" functions at once, to a stand-in that answers 429 above {account_limit:g} per second"
    )
    paced = rate_run(files, rate, concurrency, account_limit)
    ratio = paced.per_second / rate
    print(f"   paced at {rate:g}/s: {paced.line()}")
    unpaced = rate_run(max(10, files // 5), 0.0, concurrency, account_limit)
    print(f"   unpaced (SubmitRatePerSecond 0), {unpaced.files} files, same limit: {unpaced.line()}")
    report.add(
        Goal(
            f"{files:,}-file drop at a set rate",
            f"{paced.per_second:.2f}/s, {paced.peak_concurrency} at once; {paced.refused} 429s; {paced.lost} jobs lost"
            f" (unpaced: {unpaced.refused} 429s for {unpaced.files} files, {unpaced.lost} lost)",
            f"set {rate:g}/s, {concurrency} at once",
            f"{ratio:.3f}x",
            "within 10%, 0 lost to 429s",
            abs(ratio - 1) <= 0.10 and paced.lost == 0 and paced.peak_concurrency <= concurrency,
        )
    )


def frange(start: float, stop: float, step: float) -> Iterator[float]:
    while start <= stop:
        yield start
        start += step


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions and a 64 MiB output: a smoke run")
    parser.add_argument("--webhooks", type=int, default=300, help="webhooks per output size")
    parser.add_argument("--jobs", type=int, default=10, help="jobs in the priced batch")
    parser.add_argument("--cold-starts", type=int, default=11, help="fresh interpreters per function and side")
    parser.add_argument("--fetch-mib", type=int, default=1024, help="output size for the fetch figures")
    parser.add_argument("--fetch-runs", type=int, default=3, help="transfers per side")
    parser.add_argument("--drop-files", type=int, default=1000, help="manifests in the rate run")
    parser.add_argument("--submit-rate", type=float, default=3.0, help="SubmitRatePerSecond for the rate run")
    parser.add_argument("--submit-concurrency", type=int, default=5, help="SubmitConcurrency for the rate run")
    parser.add_argument("--account-limit", type=float, default=4.0, help="the stand-in's 429 limit, per second")
    parser.add_argument(
        "--only", nargs="+", choices=["webhook", "cost", "cold", "fetch", "rate"], help="run only these"
    )
    parser.add_argument("--fetch-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fetch_child:
        mode, size, outputs_url, endpoint = args.fetch_child
        fetch_child(mode, int(size), outputs_url, endpoint)
        return 0
    if args.quick:
        args.webhooks, args.jobs, args.cold_starts, args.fetch_mib, args.fetch_runs = 40, 3, 3, 64, 1
        args.drop_files = 100
    only = set(args.only or ["webhook", "cost", "cold", "fetch", "rate"])
    report = Report()
    if "webhook" in only:
        bench_webhook(report, args.webhooks)
    services: dict[str, list[str]] = {}
    if "cost" in only:
        services = bench_cost(report, args.jobs)
    if "cold" in only:
        bench_cold_start(report, services, args.cold_starts)
    if "fetch" in only:
        bench_fetch(report, args.fetch_mib, args.fetch_runs)
    if "rate" in only:
        bench_drop_rate(report, args.drop_files, args.submit_rate, args.submit_concurrency, args.account_limit)
    print("\nGoals (this machine, this run):\n" + report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
