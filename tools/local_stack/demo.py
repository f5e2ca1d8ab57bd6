"""``make demo`` and ``make up``: the pipeline on this machine, watched by a person."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from infinitetalk_core.media import playing_seconds
from infinitetalk_core.models import TERMINAL_STATUSES, Job, usd_text
from infinitetalk_core.storage import OUTPUTS_PREFIX

from .samples import portrait_png, voice_wav
from .stack import CONNECTION_FILE, LocalStack, StackOptions, print_log

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
DEMO_OUTPUT = Path("demo-output")


def drop_samples(stack: LocalStack) -> list[str]:
    """A one-speaker folder drop and a two-speaker manifest drop, as a user would make them."""
    stack.drop_folder(
        "anchor",
        {"image.png": portrait_png(), "audio.wav": voice_wav(6.4)},
        {"prompt": "a calm news anchor looking into the camera", "resolution": "480p", "seed": 42},
    )
    stack.put("library/people/duo.png", portrait_png(people=2, width=768, height=432))
    stack.put("library/voice/ana.wav", voice_wav(3.2, pitch=210))
    stack.put("library/voice/ben.wav", voice_wav(2.5, pitch=110))
    manifest = {
        "inputs": {
            "image": "library/people/duo.png",
            "left_audio": "library/voice/ana.wav",
            "right_audio": "library/voice/ben.wav",
        },
        "order": "left_right",
        "resolution": "720p",
        "prompt": "two people taking turns in an interview",
    }
    stack.put("inbox/interview.json", json.dumps(manifest).encode())
    return ["anchor", "interview"]


def watch(stack: LocalStack, names: list[str], timeout: float) -> dict[str, Job]:
    """Print each state change as it happens, until every job is final."""
    seen: dict[str, str] = {}
    finished: dict[str, Job] = {}
    started = time.monotonic()
    while len(finished) < len(names):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"jobs not finished after {timeout:.0f} s: {sorted(set(names) - set(finished))}")
        for name in names:
            job = stack.newest_job(name)
            state = job.status.value if job else "waiting for S3 event"
            if seen.get(name) != state:
                seen[name] = state
                console.print(f"  [dim]{time.monotonic() - started:6.1f}s[/]  {name:<10} -> [bold]{state}[/]")
            if job is not None and job.status in TERMINAL_STATUSES:
                finished[name] = job
        time.sleep(0.2)
    return finished


def download(stack: LocalStack, name: str) -> list[Path]:
    paths = []
    for key in stack.output_keys(name):
        target = DEMO_OUTPUT / key.removeprefix(OUTPUTS_PREFIX)
        target.parent.mkdir(parents=True, exist_ok=True)
        stack.s3.download_file(stack.bucket, key, str(target))
        paths.append(target)
    return paths


def video_seconds(path: Path) -> float:
    """The length a player plays, measured the way the ledger measures it."""
    with path.open("rb") as stream:
        return float(playing_seconds(stream, path.name))


def report(stack: LocalStack, jobs: dict[str, Job]) -> None:
    videos = Table(title="Outputs", title_justify="left")
    for column in ("job", "status", "video", "length", "billed", "price"):
        videos.add_column(column)
    for name, job in jobs.items():
        paths = download(stack, name)
        for path in paths:
            if path.suffix == ".mp4":
                videos.add_row(
                    name,
                    job.status.value,
                    str(path),
                    f"{video_seconds(path):.2f} s",
                    f"{job.billed_seconds} s",
                    usd_text(job.charged_micros or 0),
                )
        if not any(p.suffix == ".mp4" for p in paths):
            videos.add_row(name, job.status.value, job.error or "", "", "", "")
    console.print(videos)

    month = next(iter(jobs.values())).month
    totals, entries = stack.jobs.month(month)
    ledger = Table(title=f"Ledger {month}", title_justify="left")
    for column in ("job", "model", "res", "outcome", "rule set", "billed", "rate", "estimate", "charge"):
        ledger.add_column(column)
    for entry in entries:
        ledger.add_row(
            entry.job_name,
            entry.model.short,
            entry.resolution.value,
            entry.outcome,
            entry.rule_set,
            f"{entry.billed_seconds} s",
            f"{usd_text(entry.rate_micros_per_second)}/s",
            usd_text(entry.estimate_micros),
            usd_text(entry.charged_micros),
        )
    overall = next((t for t in totals if t.model is None), None)
    if overall is not None:
        ledger.add_row(
            "[bold]month total[/]",
            "",
            "",
            "",
            "",
            f"{overall.billed_seconds} s",
            "",
            "",
            usd_text(overall.charged_micros),
        )
    console.print(ledger)


def demo(verbose: bool = False, timeout: float = 300.0) -> int:
    options = StackOptions(
        standin={"seconds_per_output_second": 0.3, "video_height": None},
        log_level="INFO" if verbose else "WARNING",
        log=print_log if verbose else (lambda source, line: None),
    )
    console.print("[bold]Starting the local stack[/] (moto server, WaveSpeed stand-in, the four functions)...")
    with LocalStack(options) as stack:
        console.print(f"  bucket [cyan]{stack.bucket}[/] at {stack.endpoint_url}")
        shutil.rmtree(DEMO_OUTPUT, ignore_errors=True)
        names = drop_samples(stack)
        console.print("Dropped [cyan]inbox/anchor/[/] (one speaker) and [cyan]inbox/interview.json[/] (two speakers):")
        jobs = watch(stack, names, timeout)
        report(stack, jobs)
    console.print(f"Videos and result.json files are in [cyan]{DEMO_OUTPUT}/[/]. The local stack has stopped.")
    return 0 if all(job.status.value == "delivered" for job in jobs.values()) else 1


def up(moto_port: int, api_port: int, standin_port: int, faults: list[str], console_port: int = 0) -> int:
    options = StackOptions(
        moto_port=moto_port,
        api_port=api_port,
        standin_port=standin_port,
        standin={"video_height": None},
        console=True,
        console_port=console_port,
    )
    with LocalStack(options) as stack:
        if faults:
            stack.standin.faults.assign(faults)
            console.print(f"WaveSpeed stand-in faults: {', '.join(faults)}")
        path = stack.write_connection_file()
        console.print(
            f"""
[bold]The local stack is up.[/] Ctrl-C stops it.

  console        {stack.console_url}   (jobs, videos and the month's money in a browser)
  AWS endpoint   {stack.endpoint_url}   (credentials: testing / testing, region us-east-1)
  bucket         {stack.bucket}
  webhook URL    {stack.webhook_url}
  connection     {path}  (read by the infinitetalk command)

Drop a job with the command-line tool:
  .venv/bin/infinitetalk drop --image portrait.png --audio voice.mp3 --name anchor
  .venv/bin/infinitetalk wait anchor
  .venv/bin/infinitetalk status
  .venv/bin/infinitetalk ledger

or with any S3 client:
  aws --endpoint-url {stack.endpoint_url} s3 cp voice.mp3 s3://{stack.bucket}/inbox/anchor/audio.mp3
  aws --endpoint-url {stack.endpoint_url} s3 cp portrait.png s3://{stack.bucket}/inbox/anchor/image.png
  echo '{{}}' | aws --endpoint-url {stack.endpoint_url} s3 cp - s3://{stack.bucket}/inbox/anchor/job.json

Outputs appear under s3://{stack.bucket}/outputs/<name>/. Every function logs below.
""",
            soft_wrap=True,
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            console.print("\nStopping the local stack...")
        finally:
            CONNECTION_FILE.unlink(missing_ok=True)
    return 0
