"""``make soak``: many jobs through the local stack with every fault on at once, then the invariants, measured.

The faults, all at once: webhooks sent three times, 30% dropped, many late (some past the overdue
time, so reconcile's poll races them); 20% of submits answered 429; 10% of submit answers lost after
the task was made; 20% of result reads answered 500; 5% of tasks failed; each S3 event delivered
five times, some copies at once; DynamoDB transaction conflicts and throttling; and crashes at the
step boundaries of ``faults.CRASH_POINTS``. Three models, folder drops (with and without
``job.json``) and manifests, paced at ``drops_per_second`` so the local queues stay short.

What it then checks, each with its figure: every job reached a terminal status (held jobs are
counted apart: they wait for an operator, by design); no job has two WaveSpeed tasks; every task
WaveSpeed completed (and so billed) is in the ledger; the ledger's lines add up to the month's
totals; every delivered video decodes and is charged for the length it plays; no input changed;
no budget hold is left but those the rules keep; the dead-letter queues are empty. It prints jobs
per minute and the process's peak memory (moto and the stand-in run in it too), and exits 1 if an
invariant fails.
"""

from __future__ import annotations

import io
import json
import math
import random
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av

from infinitetalk_core import storage
from infinitetalk_core.models import TERMINAL_STATUSES, FailureKind, Job, JobStatus, LedgerEntry
from infinitetalk_core.repository import TOTAL_ALL, month_key

from .faults import LocalFaults
from .samples import portrait_mp4, portrait_png, voice_wav
from .stack import STATE_DIR, LocalStack, StackOptions

# Lengths whose sums (two speakers one after the other) are never within 0.1 s of a whole second:
# a charge is never decided by a rounding hair.
AUDIO_SECONDS = (0.8, 1.3, 2.15, 3.45)
MODELS = ("single", "multi", "video")
MODES = ("folder", "folder-settled", "manifest")
# Jobs that may keep their estimate held on purpose: the money they may owe cannot be confirmed.
POSSIBLY_OWED = frozenset({FailureKind.RESULT_UNREADABLE, FailureKind.SUBMIT_UNKNOWN})
WEBHOOK_DELAYS = (0.0, 0.0, 0.0, 2.0, 6.0, 25.0)  # 25 s: after the local WebhookOverdueSeconds (20 s)


def every_fault(seed: int) -> tuple[dict[str, Any], LocalFaults]:
    """The stand-in's knobs and the stack's own faults, as the soak turns them on."""
    standin = {
        "seed": seed,
        "webhook_copies": 3,
        "drop_webhook_rate": 0.3,
        "submit_429_rate": 0.2,
        "submit_500_after_create_rate": 0.1,
        "result_500_rate": 0.2,
        "fail_rate": 0.05,
    }
    local = LocalFaults(
        seed=seed,
        transaction_conflict_rate=0.05,
        throttle_rate=0.02,
        crash_rates={"after_job_write": 0.005, "after_charge": 0.03, "mid_upload": 0.03, "after_submit": 0.02},
        s3_event_copies=5,
        s3_event_copy_spread_seconds=5,
    )
    return standin, local


@dataclass
class SoakPlan:
    jobs: int = 1000
    drops_per_second: float = 0.8
    seed: int = 7
    # How long to wait, after the last drop, for every job to settle, looking every ``poll_seconds``
    # (each look scans the jobs table, which costs the stack it watches).
    settle_timeout_seconds: float = 900.0
    poll_seconds: float = 10.0
    # Stack settings for this run (the local stack's own defaults otherwise).
    environment: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    function_timeouts: dict[str, float] = field(default_factory=dict)
    # Outputs above this go up by multipart upload, so small test videos exercise that path and its crash.
    multipart_threshold_bytes: int = 4 * 1024
    # Crashes forced at these points (point -> how many), besides the random ones.
    crash_next: dict[str, int] = field(default_factory=dict)
    log_path: Path | None = STATE_DIR / "soak.log"
    progress: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


@dataclass
class Dropped:
    name: str
    model: str
    mode: str
    input_keys: list[str]


@dataclass
class Check:
    name: str
    figure: str
    ok: bool


@dataclass
class SoakReport:
    checks: list[Check] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def check(self, name: str, ok: bool, figure: str) -> None:
        self.checks.append(Check(name, figure, ok))

    def fact(self, name: str, figure: str) -> None:
        self.facts.append((name, figure))

    def text(self) -> str:
        width = max(len(c.name) for c in self.checks) if self.checks else 10
        lines = ["", "invariants"]
        lines += [f"  {'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.figure}" for c in self.checks]
        lines += ["", "measured"]
        fact_width = max(len(name) for name, _ in self.facts) if self.facts else 10
        lines += [f"  {name:<{fact_width}}  {figure}" for name, figure in self.facts]
        lines += ["", "all invariants hold" if self.ok else "AN INVARIANT FAILED"]
        return "\n".join(lines)


# ---- the drops --------------------------------------------------------------------------------
class MediaKit:
    """The few small inputs every job reuses (under keys of its own, so each job is its own upload)."""

    def __init__(self) -> None:
        self.one = portrait_png(people=1, width=256, height=256)
        self.two = portrait_png(people=2, width=384, height=256)
        self.video = portrait_mp4(1.5)
        self.voices = {seconds: voice_wav(seconds) for seconds in AUDIO_SECONDS}
        self.low_voices = {seconds: voice_wav(seconds, pitch=210.0) for seconds in AUDIO_SECONDS}


def job_files(model: str, rng: random.Random, kit: MediaKit) -> tuple[dict[str, bytes], dict[str, Any]]:
    options: dict[str, Any] = {"resolution": rng.choice(("480p", "480p", "720p"))}
    if model == "single":
        return {"image.png": kit.one, "audio.wav": kit.voices[rng.choice(AUDIO_SECONDS)]}, options
    if model == "multi":
        options["order"] = rng.choice(("meanwhile", "left_right", "right_left"))
        files = {
            "image.png": kit.two,
            "left_audio.wav": kit.voices[rng.choice(AUDIO_SECONDS)],
            "right_audio.wav": kit.low_voices[rng.choice(AUDIO_SECONDS)],
        }
        return files, options
    return {"video.mp4": kit.video, "audio.wav": kit.voices[rng.choice(AUDIO_SECONDS)]}, options


def drop(stack: LocalStack, index: int, rng: random.Random, kit: MediaKit) -> Dropped:
    model = MODELS[index % len(MODELS)]
    mode = MODES[(index // len(MODELS)) % len(MODES)]
    name = f"soak-{index:05d}-{model}-{mode}"
    files, options = job_files(model, rng, kit)
    if mode == "manifest":
        inputs = {}
        for filename, body in files.items():
            key = f"library/{name}/{filename}"
            stack.put(key, body)
            inputs[filename.rsplit(".", 1)[0]] = key
        stack.put(f"inbox/{name}.json", json.dumps({"inputs": inputs, **options}).encode())
        return Dropped(name, model, mode, sorted(inputs.values()))
    # A folder with job.json starts at once; one without waits for the settle time.
    stack.drop_folder(name, files, options if mode == "folder" else None)
    keys = [f"inbox/{name}/{filename}" for filename in files]
    if mode == "folder":
        keys.append(f"inbox/{name}/job.json")  # without it the defaults apply: 480p, `meanwhile`
    return Dropped(name, model, mode, sorted(keys))


# ---- watching ---------------------------------------------------------------------------------
def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kB on Linux


@contextmanager
def background(every_seconds: float, work: Callable[[], None]) -> Iterator[None]:
    stopping = threading.Event()

    def loop() -> None:
        while not stopping.wait(every_seconds):
            work()

    thread = threading.Thread(target=loop, name="soak-background", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        thread.join(timeout=5)


def newest_jobs(stack: LocalStack, names: set[str]) -> tuple[dict[str, list[Job]], int]:
    """Every job of the soak's names (one scan), and how many job rows the table holds in all."""
    by_name: dict[str, list[Job]] = {}
    everything = stack.jobs.recent(limit=10**9)
    for job in everything:
        if job.job_name in names:
            by_name.setdefault(job.job_name, []).append(job)
    return by_name, len(everything)


def settled(job: Job) -> bool:
    return job.status in TERMINAL_STATUSES or job.status is JobStatus.HELD


# ---- the run ----------------------------------------------------------------------------------
def run_soak(plan: SoakPlan) -> SoakReport:
    standin_faults, local_faults = every_fault(plan.seed)
    local_faults.crash_next.update(plan.crash_next)
    log_file = None
    if plan.log_path is not None:
        plan.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = plan.log_path.open("w", encoding="utf-8")
    lock = threading.Lock()

    def log(source: str, message: str) -> None:
        if log_file is None:
            return
        stamp = time.strftime("%H:%M:%S")
        with lock:
            for line in message.splitlines() or [""]:
                log_file.write(f"{stamp} {source:<10} {line}\n")

    options = StackOptions(
        parameters={"MonthlyBudgetUsd": "1000000", **plan.parameters},
        environment=dict(plan.environment),
        function_timeouts=dict(plan.function_timeouts),
        log=log,
        log_level="WARNING",
        log_stream=log_file,
        faults=local_faults,
    )
    saved_threshold = storage.STREAMING_TRANSFER.multipart_threshold
    storage.STREAMING_TRANSFER.multipart_threshold = plan.multipart_threshold_bytes
    try:
        with LocalStack(options) as stack:
            stack.standin.faults.assign(f"{k}={v}" for k, v in standin_faults.items())
            return soak_on(stack, plan, local_faults)
    finally:
        storage.STREAMING_TRANSFER.multipart_threshold = saved_threshold
        if log_file is not None:
            log_file.close()


def soak_on(stack: LocalStack, plan: SoakPlan, local_faults: LocalFaults) -> SoakReport:
    rng = random.Random(plan.seed)
    kit = MediaKit()
    dropped: list[Dropped] = []
    inputs_before: dict[str, str] = {}
    samples: list[int] = []
    shuffle = random.Random(plan.seed + 1)

    def vary_webhook_delay() -> None:
        stack.standin.faults.webhook_delay_seconds = shuffle.choice(WEBHOOK_DELAYS)

    started = time.monotonic()
    last_progress = started
    names: set[str] = set()
    with background(1.0, vary_webhook_delay), background(2.0, lambda: samples.append(rss_bytes())):
        for index in range(plan.jobs):
            due = started + index / plan.drops_per_second
            time.sleep(max(0.0, due - time.monotonic()))
            job = drop(stack, index, rng, kit)
            dropped.append(job)
            names.add(job.name)
            inputs_before.update(etags(stack, job.input_keys))  # as dropped, before anything could touch them
            if time.monotonic() - last_progress >= 30:
                last_progress = time.monotonic()
                so_far, _ = newest_jobs(stack, names)
                done = sum(1 for jobs in so_far.values() if jobs and all(settled(j) for j in jobs))
                plan.progress(
                    f"{time.monotonic() - started:6.0f} s  dropped {len(dropped)}/{plan.jobs}  settled {done}  "
                    f"rss {rss_bytes() / 2**20:.0f} MiB"
                )
        dropped_at = time.monotonic()
        deadline = dropped_at + plan.settle_timeout_seconds
        by_name: dict[str, list[Job]] = {}
        while time.monotonic() < deadline:
            by_name, _ = newest_jobs(stack, names)
            done = sum(1 for jobs in by_name.values() if jobs and all(settled(j) for j in jobs))
            if done == len(names):
                break
            if time.monotonic() - last_progress >= 30:
                last_progress = time.monotonic()
                statuses = Counter(j.status.value for jobs in by_name.values() for j in jobs if not settled(j))
                plan.progress(
                    f"{time.monotonic() - started:6.0f} s  settled {done}/{len(names)}  waiting: "
                    f"{dict(statuses)}  rss {rss_bytes() / 2**20:.0f} MiB"
                )
            time.sleep(plan.poll_seconds)
        settled_at = time.monotonic()
        stack.standin.wait_idle(60)
    return verify(stack, plan, dropped, inputs_before, local_faults, started, settled_at, samples)


def etags(stack: LocalStack, keys: list[str]) -> dict[str, str]:
    found = {}
    for key in keys:
        found[key] = stack.s3.head_object(Bucket=stack.bucket, Key=key)["ETag"]
    return found


def listed_etags(stack: LocalStack, prefixes: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for prefix in prefixes:
        pages = stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix)
        for page in pages:
            found.update({item["Key"]: item["ETag"] for item in page.get("Contents", [])})
    return found


# ---- the invariants ---------------------------------------------------------------------------
def played_seconds(body: bytes) -> float:
    """The stored video decoded whole; its length as players play it (the sound track's edit list)."""
    with av.open(io.BytesIO(body), mode="r") as media:
        if not media.streams.video or not media.streams.audio:
            raise ValueError("no picture or no sound track")
        track = media.streams.audio[0]
        frames = sum(1 for _ in media.decode(video=0))
        if frames == 0:
            raise ValueError("no picture frame decodes")
    with av.open(io.BytesIO(body), mode="r") as media:
        track = media.streams.audio[0]
        samples = sum(frame.samples for frame in media.decode(audio=0))
        if samples == 0:
            raise ValueError("no sound decodes")
        if track.duration is None or track.time_base is None:
            raise ValueError("declares no length")
        return float(track.duration * track.time_base)


def billed_for(seconds: float) -> int:
    """The default rule set, written out on its own: whole seconds up, at least five."""
    return max(5, math.ceil(Decimal(str(round(seconds, 6)))))


def task_job(webhook_url: str | None) -> str | None:
    if not webhook_url:
        return None
    values = parse_qs(urlsplit(webhook_url).query).get("job")
    return values[0] if values else None


def verify(
    stack: LocalStack,
    plan: SoakPlan,
    dropped: list[Dropped],
    inputs_before: dict[str, str],
    local_faults: LocalFaults,
    started: float,
    settled_at: float,
    samples: list[int],
) -> SoakReport:
    report = SoakReport(injected=Counter(local_faults.injected))
    names = {item.name for item in dropped}
    by_name, _ = newest_jobs(stack, names)
    jobs = [job for jobs in by_name.values() for job in jobs]
    statuses = Counter(job.status.value for job in jobs)
    terminal = [job for job in jobs if job.status in TERMINAL_STATUSES]
    held = [job for job in jobs if job.status is JobStatus.HELD]
    missing = sorted(names - set(by_name))
    twice = sorted(name for name, found in by_name.items() if len(found) > 1)
    report.check(
        "every job terminal (held apart)",
        len(terminal) + len(held) == len(names) and not missing and not twice,
        f"{len(terminal)}/{len(names)} terminal, {len(held)} held; {dict(sorted(statuses.items()))}"
        + (f"; drops with no job: {missing[:5]}" if missing else "")
        + (f"; drops with two jobs: {twice[:5]}" if twice else ""),
    )

    tasks = stack.standin.tasks
    tasks_of: dict[str, list[str]] = {}
    for task in tasks.values():
        owner = task_job(task.webhook_url)
        if owner is not None:
            tasks_of.setdefault(owner, []).append(task.id)
    doubled = {job_id: ids for job_id, ids in tasks_of.items() if len(ids) > 1}
    report.check(
        "jobs with two or more WaveSpeed tasks",
        not doubled,
        f"{len(doubled)} (of {len(tasks)} tasks for {len(tasks_of)} jobs)"
        + (f": {sorted(doubled)[:3]}" if doubled else ""),
    )

    months = sorted({job.month for job in jobs if job.month})
    entries: list[LedgerEntry] = []
    totals_ok = True
    totals_figures = []
    reserved_total = 0
    for month in months:
        totals, month_entries = stack.jobs.month(month)
        entries.extend(month_entries)
        overall = next((t for t in totals if t.model is None), None)
        raw = stack.aws.dynamodb.get_item(
            TableName=stack.ledger_table, Key=month_key(month, TOTAL_ALL), ConsistentRead=True
        ).get("Item", {})
        committed = int(raw.get("committed_micros", {}).get("N", "0"))
        charged = sum(e.charged_micros for e in month_entries)
        seconds = sum(e.billed_seconds for e in month_entries)
        per_model: dict[tuple[str, str], tuple[int, int, int]] = {}
        for entry in month_entries:
            key = (entry.model.value, entry.resolution.value)
            lines, billed, micros = per_model.get(key, (0, 0, 0))
            per_model[key] = (lines + 1, billed + entry.billed_seconds, micros + entry.charged_micros)
        model_totals = {
            (t.model.value, t.resolution.value): (t.jobs, t.billed_seconds, t.charged_micros)
            for t in totals
            if t.model is not None and t.resolution is not None
        }
        month_ok = (
            overall is not None
            and overall.charged_micros == charged
            and overall.jobs == len(month_entries)
            and overall.billed_seconds == seconds
            and committed == overall.charged_micros + overall.reserved_micros
            and all(per_model.get(k, (0, 0, 0)) == model_totals.get(k, (0, 0, 0)) for k in {*per_model, *model_totals})
        )
        totals_ok = totals_ok and month_ok
        reserved_total += overall.reserved_micros if overall else 0
        totals_figures.append(
            f"{month}: {len(month_entries)} lines ${charged / 1e6:.2f} = total "
            f"${(overall.charged_micros if overall else 0) / 1e6:.2f}, {seconds} s billed"
        )
    report.check("ledger lines add up to the month totals", totals_ok, "; ".join(totals_figures) or "no ledger")

    ledger_tasks = Counter(entry.task_id for entry in entries)
    lines_per_job = Counter(entry.job_id for entry in entries)
    charged_twice = [task for task, count in ledger_tasks.items() if count > 1]
    jobs_twice = [job_id for job_id, count in lines_per_job.items() if count > 1]
    report.check(
        "each task and each job charged at most once",
        not charged_twice and not jobs_twice,
        f"{len(charged_twice)} tasks, {len(jobs_twice)} jobs with two ledger lines",
    )

    held_tasks = {task_id for job in held for task_id in tasks_of.get(job.job_id, [])}
    completed = [task for task in tasks.values() if task.status == "completed"]
    unknown = [task.id for task in completed if task.id not in ledger_tasks and task.id not in held_tasks]
    report.check(
        "tasks WaveSpeed completed (billed) that the ledger does not know",
        not unknown,
        f"{len(unknown)} of {len(completed)} completed tasks"
        + (f" (and {len(held_tasks)} of held jobs, awaiting an operator)" if held_tasks else "")
        + (f": {unknown[:3]}" if unknown else ""),
    )

    bad_outputs = check_outputs(stack, terminal, entries)
    delivered = [job for job in terminal if job.status is JobStatus.DELIVERED]
    report.check(
        "delivered videos decode and are charged the length they play",
        not bad_outputs,
        f"{len(delivered) - len(bad_outputs)}/{len(delivered)} valid" + (f": {bad_outputs[:3]}" if bad_outputs else ""),
    )

    inputs_after = listed_etags(stack, ("inbox/", "library/"))
    changed = sorted(key for key, etag in inputs_before.items() if inputs_after.get(key) != etag)
    report.check(
        "inputs unchanged",
        not changed,
        f"{len(inputs_before) - len(changed)}/{len(inputs_before)} inputs as dropped"
        + (f": {changed[:3]}" if changed else ""),
    )

    keeping = [job for job in jobs if job.reserved_micros]
    wrongly = [
        job.job_id
        for job in keeping
        if not (job.status is JobStatus.HELD or (job.status is JobStatus.FAILED and job.failure_kind in POSSIBLY_OWED))
    ]
    held_sum = sum(job.reserved_micros for job in keeping)
    report.check(
        "budget holds released",
        not wrongly and held_sum == reserved_total,
        f"month totals hold ${reserved_total / 1e6:.2f}; jobs hold ${held_sum / 1e6:.2f} "
        f"({len(keeping)} jobs: held or possibly owed)" + (f"; wrongly: {wrongly[:3]}" if wrongly else ""),
    )

    dead = stack.dead_letters()
    report.check("dead-letter queues empty", not any(dead.values()), ", ".join(f"{k} {v}" for k, v in dead.items()))

    elapsed = max(1e-9, settled_at - started)
    mix = dict(Counter(f"{d.model}/{d.mode}" for d in dropped))
    report.fact("jobs", f"{len(names)} dropped at {plan.drops_per_second:g}/s: {mix}")
    report.fact("throughput", f"{len(terminal) / elapsed * 60:.1f} jobs per minute ({elapsed:.0f} s to settle all)")
    report.fact(
        "memory",
        f"peak RSS {peak_rss_bytes() / 2**20:.0f} MiB (moto, stand-in and functions in one process); "
        f"sampled {min(samples or [0]) / 2**20:.0f}..{max(samples or [0]) / 2**20:.0f} MiB, "
        f"last {(samples[-1] if samples else 0) / 2**20:.0f} MiB",
    )
    outcome = Counter(
        (job.status.value, job.failure_kind.value if job.failure_kind else "") for job in jobs if job.status
    )
    report.fact("outcomes", ", ".join(f"{s}{'/' + k if k else ''} {n}" for (s, k), n in sorted(outcome.items())))
    report.fact(
        "stand-in",
        f"{len(tasks)} tasks ({Counter(t.status for t in tasks.values())}), "
        f"{len(stack.standin.webhook_deliveries)} webhook posts",
    )
    report.fact("injected", ", ".join(f"{k} {v}" for k, v in sorted(local_faults.injected.items())))
    for name, function in sorted(stack.functions.items()):
        c = function.counts
        report.fact(
            f"function {name}",
            f"{c.invocations} invocations, peak {c.peak_concurrency}/{function.concurrency} at once, "
            f"{c.environments} environments, {c.errors} errors, {c.crashes} crashes, {c.timeouts} timeouts "
            f"(timeout {function.timeout_seconds:g} s)",
        )
    return report


def check_outputs(stack: LocalStack, terminal: list[Job], entries: list[LedgerEntry]) -> list[str]:
    line_of = {entry.job_id: entry for entry in entries}
    bad: list[str] = []
    for job in terminal:
        if job.status is not JobStatus.DELIVERED:
            continue
        entry = line_of.get(job.job_id)
        if entry is None or not job.output_keys:
            bad.append(f"{job.job_name}: no ledger line or no output")
            continue
        try:
            body = stack.s3.get_object(Bucket=stack.bucket, Key=job.output_keys[0])["Body"].read()
            seconds = played_seconds(body)
        except Exception as exc:  # noqa: BLE001 - any reason a video is unreadable is the finding
            bad.append(f"{job.job_name}: {type(exc).__name__}: {exc}")
            continue
        rate = entry.rate_micros_per_second
        if entry.billed_seconds != billed_for(seconds) or entry.charged_micros != entry.billed_seconds * rate:
            bad.append(f"{job.job_name}: plays {seconds:.3f} s, billed {entry.billed_seconds} s")
    return bad


def main(jobs: int, drops_per_second: float, seed: int, settle_timeout: float) -> int:
    plan = SoakPlan(jobs=jobs, drops_per_second=drops_per_second, seed=seed, settle_timeout_seconds=settle_timeout)
    print(
        f"soak: {jobs} jobs at {drops_per_second:g} drops/s with every fault on; function logs in {plan.log_path}",
        flush=True,
    )
    report = run_soak(plan)
    print(report.text(), flush=True)
    return 0 if report.ok else 1
