"""The ``infinitetalk`` command: thin typer commands over ``connection``, ``drop``, ``waiting`` and ``render``.

Exit codes: 0 done, 1 the job failed or AWS said no, 2 bad usage, nothing to talk to or (``wait``) nothing
dropped under that name, 3 timed out. ``status`` of a name with no job yet is an answer (0), not a failure.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import webbrowser
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.text import Text

from infinitetalk_core.intake import name_problem
from infinitetalk_core.models import JobStatus, Role, utc_now
from infinitetalk_core.submit_states import is_waiting_for_api_key

from .connection import DEFAULT_REGION, Clients, ConnectionOptions, NotConfigured, resolve
from .drop import DropRefused, leftover_problems, plan_drop
from .render import (
    MONTH_PATTERN,
    WIDE_COLUMNS,
    api_key_wait_note,
    change_line,
    delivery_line,
    entries_table,
    jobs_table,
    no_job_line,
    totals_table,
)
from .stack_setup import SetupRefused, read_api_key, resolve_targets, secrets_client, set_up, wavespeed_http
from .transfer import download_all, upload_all
from .waiting import delivered_objects, failure_of, newest_upload, wait_for

EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 3
PIPE_WIDTH = 200
NEVER_DROPPED = (
    "nothing was dropped as {name!r}: no inbox/{name}/ folder, no inbox/{name}.json manifest and no job of "
    "that name; check the name (`infinitetalk status` lists recent jobs) or drop it first"
)

app = typer.Typer(
    name="infinitetalk",
    help="Drop talking-video jobs into an InfiniteTalk stack, follow them, fetch the videos and read the ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Session:
    """The connection options of one invocation; the clients are built on first use, once."""

    def __init__(self, options: ConnectionOptions) -> None:
        self.options = options
        self._clients: Clients | None = None

    def clients(self) -> Clients:
        if self._clients is None:
            try:
                self._clients = Clients(resolve(self.options))
            except NotConfigured as exc:
                fail(str(exc), EXIT_USAGE)
        return self._clients

    @property
    def source(self) -> str:
        if self._clients is not None:
            return self._clients.connection.source
        return self.options.stack or "unresolved"


def out() -> Console:
    """Results on stdout; lines are never folded, so a path can be copied or piped whole."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH  # piped into grep or a file: no terminal to fit, so do not cut tables short
    return console


def err() -> Console:
    """Progress and problems on stderr, out of the way of the results."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int, details: list[str] | None = None) -> NoReturn:
    console = err()
    console.print(Text.assemble(("error: ", "red"), message))
    for line in details or []:
        console.print(Text(f"  - {line}"))
    raise typer.Exit(code)


@contextmanager
def talking_to_aws(session: Session) -> Iterator[None]:
    """AWS failures as one readable line naming the stack, not a traceback."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        fail(f"AWS refused or could not be reached (stack from {session.source}): {exc}", EXIT_FAILED)


@app.callback()
def connect(
    ctx: typer.Context,
    endpoint_url: Annotated[
        str | None, typer.Option(envvar="AWS_ENDPOINT_URL", help="AWS endpoint, e.g. a local stack's URL.")
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            envvar="AWS_DEFAULT_REGION", help=f"AWS region (default: {DEFAULT_REGION}, or the local stack's)."
        ),
    ] = None,
    stack: Annotated[
        str | None, typer.Option(envvar="INFINITETALK_STACK", help="Deployed CloudFormation stack to read.")
    ] = None,
    bucket: Annotated[str | None, typer.Option(envvar="INFINITETALK_BUCKET", help="Media bucket name.")] = None,
    jobs_table: Annotated[str | None, typer.Option(envvar="INFINITETALK_JOBS_TABLE", help="Jobs table name.")] = None,
    ledger_table: Annotated[
        str | None, typer.Option(envvar="INFINITETALK_LEDGER_TABLE", help="Ledger table name.")
    ] = None,
    local_stack_file: Annotated[
        Path | None,
        typer.Option(
            envvar="INFINITETALK_LOCAL_STACK_FILE",
            help="The local stack's connection file (default: .local-stack/stack.json).",
        ),
    ] = None,
) -> None:
    """Where the stack is: --stack, or the three resource names, or else the local stack's file."""
    ctx.obj = Session(
        ConnectionOptions(
            endpoint_url=endpoint_url,
            region=region,
            stack=stack,
            bucket=bucket,
            jobs_table=jobs_table,
            ledger_table=ledger_table,
            local_stack_file=local_stack_file,
        )
    )


@app.command()
def drop(
    ctx: typer.Context,
    image: Annotated[Path | None, typer.Option(help="Portrait (png, jpg, webp).")] = None,
    audio: Annotated[Path | None, typer.Option(help="Voice for one speaker or video-to-video.")] = None,
    left_audio: Annotated[Path | None, typer.Option(help="Left speaker's voice (two speakers).")] = None,
    right_audio: Annotated[Path | None, typer.Option(help="Right speaker's voice (two speakers).")] = None,
    video: Annotated[Path | None, typer.Option(help="Source video (video-to-video).")] = None,
    mask_image: Annotated[Path | None, typer.Option(help="Mask of who speaks.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Text guidance.")] = None,
    resolution: Annotated[str | None, typer.Option(help="480p (default) or 720p.")] = None,
    seed: Annotated[int | None, typer.Option(help="-1..2147483647; -1 is random.")] = None,
    order: Annotated[str | None, typer.Option(help="Two speakers: meanwhile, left_right or right_left.")] = None,
    model: Annotated[
        str | None, typer.Option(help="infinitetalk, multi or video-to-video (else from the files).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Job name (default: the image/video name and the time).")] = None,
) -> None:
    """Upload a job's files to inbox/NAME/ and then job.json, which starts it."""
    files = {
        Role.IMAGE: image,
        Role.AUDIO: audio,
        Role.LEFT_AUDIO: left_audio,
        Role.RIGHT_AUDIO: right_audio,
        Role.VIDEO: video,
        Role.MASK_IMAGE: mask_image,
    }
    options: dict[str, object | None] = {
        "model": model,
        "prompt": prompt,
        "resolution": resolution,
        "seed": seed,
        "order": order,
    }
    try:
        plan = plan_drop(files, options, name, utc_now())
    except DropRefused as exc:
        fail("nothing was uploaded:", EXIT_USAGE, exc.problems)
    session: Session = ctx.obj
    clients = session.clients()
    with talking_to_aws(session):
        if problems := leftover_problems(plan, clients.bucket.list(plan.folder)):
            fail("nothing was uploaded:", EXIT_USAGE, problems)
        upload_all(clients.s3, clients.bucket.bucket, plan.uploads, err())
    where = f"s3://{clients.bucket.bucket}/"
    console = out()
    console.print(f"dropped {plan.name} ({plan.model.short}) into {where}{plan.folder}")
    console.print(f"outputs will appear in {where}{plan.outputs} (video.mp4 and result.json, or error.json)")
    console.print(f"follow it with: infinitetalk wait {plan.name}")


@app.command()
def status(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Show every job of this name, newest first.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many jobs to show.")] = 20,
) -> None:
    """Recent jobs, or every job of one name."""
    if name is not None and (problem := name_problem(name)):
        fail(problem, EXIT_USAGE)
    session: Session = ctx.obj
    clients = session.clients()
    with talking_to_aws(session):
        jobs = clients.jobs.by_name(name)[:limit] if name else clients.jobs.recent(limit)
        # No job is an answer, not a failure: exit 1 is kept for jobs that failed.
        if not jobs and name:
            out().print(no_job_line(name, newest_upload(clients.bucket, name)), markup=False)
            return
    if not jobs:
        out().print("no jobs yet")
        return
    title = f"Jobs named {name}" if name else f"Recent jobs (newest {limit})"
    console = out()
    console.print(jobs_table(jobs, utc_now(), title, narrow=console.width < WIDE_COLUMNS))
    if waiting := sum(1 for job in jobs if is_waiting_for_api_key(job)):
        err().print(api_key_wait_note(waiting, session.options.stack), markup=False)


@app.command()
def wait(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The job name given to drop.")],
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait before giving up (exit 3).")] = 3600,
    into: Annotated[Path | None, typer.Option(file_okay=False, help="Where to save (default: ./outputs/NAME).")] = None,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between looks.")] = 2,
) -> None:
    """Follow the newest job of NAME until it ends; download its outputs, or show why it failed."""
    if problem := name_problem(name):
        fail(problem, EXIT_USAGE)
    session: Session = ctx.obj
    clients = session.clients()
    console, progress_console = out(), err()
    with talking_to_aws(session):
        not_before = newest_upload(clients.bucket, name)
        if not_before is None and not clients.jobs.by_name(name):
            fail(NEVER_DROPPED.format(name=name), EXIT_USAGE)
        result = wait_for(
            clients.jobs,
            name,
            not_before,
            timeout,
            poll,
            on_change=lambda job: progress_console.print(change_line(job, name, utc_now()), markup=False),
        )
        job = result.job
        if not result.finished or job is None:
            where = f"still {job.status.value}" if job else "not picked up yet"
            fail(
                f"{name} is {where} after {timeout:g} s; run `infinitetalk wait {name}` again to keep waiting",
                EXIT_TIMEOUT,
            )
        if job.status is JobStatus.DELIVERED:
            objects = delivered_objects(clients.bucket, job)
            paths = download_all(clients.s3, clients.bucket.bucket, objects, into or Path("outputs") / name, err())
            for path in paths:
                console.print(str(path), markup=False)
            console.print(f"{job.job_id} delivered: {delivery_line(job)}", markup=False)
            return
        failure = failure_of(clients.bucket, job)
    kind = f" ({job.failure_kind.value})" if job.failure_kind else ""
    problems = failure.problems + ([f"what to do: {failure.what_to_do}"] if failure.what_to_do else [])
    fail(f"{job.job_id} {job.status.value}{kind}", EXIT_FAILED, problems)


@app.command()
def ledger(
    ctx: typer.Context,
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: this month, UTC).")] = None,
) -> None:
    """A month's totals and its per-job ledger lines, read with one query."""
    month = month or utc_now().strftime("%Y-%m")
    if not MONTH_PATTERN.match(month):
        fail(f"--month {month!r}: use YYYY-MM, for example 2026-11", EXIT_USAGE)
    session: Session = ctx.obj
    clients = session.clients()
    with talking_to_aws(session):
        totals, entries = clients.jobs.month(month)
    console = out()
    if not totals and not entries:
        console.print(f"nothing in the ledger for {month}")
        return
    console.print(totals_table(totals, month))
    console.print(entries_table(entries, month, narrow=console.width < WIDE_COLUMNS))


@app.command("console")
def console_command(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    budget_usd: Annotated[
        str | None, typer.Option(help="Monthly budget to draw (default: the stack's MonthlyBudgetUsd).")
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the console in the default browser.")] = False,
) -> None:
    """Serve the web console for this stack on 127.0.0.1 until Ctrl-C: jobs, videos, the month's money, drops.

    It runs here, with your AWS credentials; nothing new is exposed in AWS.
    """
    from infinitetalk_console import ConsoleServer, budget_micros_for, console_for

    session: Session = ctx.obj
    clients = session.clients()
    progress = err()
    with talking_to_aws(session):
        try:
            budget = budget_micros_for(session.options, budget_usd)
        except NotConfigured as exc:
            fail(str(exc), EXIT_USAGE)
        try:
            server = ConsoleServer(
                console_for(clients.connection, budget, log=lambda line: progress.print(line, markup=False)), port
            )
        except OSError as exc:
            fail(
                f"port {port} on 127.0.0.1 cannot be used ({exc.strerror}); pass --port 0 for any free port", EXIT_USAGE
            )
    out().print(f"console for {clients.connection.source} at {server.url}  (Ctrl-C stops it)", markup=False)
    if open_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        progress.print("console stopped")
    finally:
        server.stop()


@app.command()
def setup(
    ctx: typer.Context,
    stack: Annotated[str | None, typer.Option(help="Deployed stack whose two secrets to set.")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="AWS endpoint, e.g. a local stack's URL.")] = None,
    region: Annotated[str | None, typer.Option(help=f"AWS region (default: {DEFAULT_REGION}).")] = None,
    api_key_file: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="File holding the WaveSpeed API key (- for stdin); else WAVESPEED_API_KEY, else a hidden prompt.",
        ),
    ] = None,
    api_key_secret_id: Annotated[
        str | None, typer.Option(help="Secret for the API key (default: the stack's ApiKeySecretArn).")
    ] = None,
    webhook_secret_id: Annotated[
        str | None, typer.Option(help="Secret for the webhook secret (default: the stack's WebhookSecretArn).")
    ] = None,
    wavespeed_url: Annotated[
        str | None, typer.Option(help="WaveSpeed API base URL (default: the stack's WaveSpeedBaseUrl).")
    ] = None,
) -> None:
    """Store the WaveSpeed API key, and the webhook secret WaveSpeed gives for it, in the stack's secrets."""
    session: Session = ctx.obj
    options = dataclasses.replace(
        session.options,
        stack=stack or session.options.stack,
        endpoint_url=endpoint_url or session.options.endpoint_url,
        region=region or session.options.region,
    )
    try:
        targets = resolve_targets(options, api_key_secret_id, webhook_secret_id, wavespeed_url)
    except NotConfigured as exc:
        fail(str(exc), EXIT_USAGE)
    prompt = (lambda: str(typer.prompt("WaveSpeed API key", hide_input=True))) if sys.stdin.isatty() else None
    try:
        key = read_api_key(api_key_file, os.environ, prompt)
        with wavespeed_http(targets.wavespeed_url) as http:
            stored = set_up(targets, key, secrets_client(targets), http)
    except SetupRefused as exc:
        fail(str(exc), EXIT_USAGE if exc.usage else EXIT_FAILED)
    console = out()
    console.print(
        f"WaveSpeed at {targets.wavespeed_url} accepted the API key from {key.origin} and gave its webhook secret",
        markup=False,
        emoji=False,
    )
    for secret in stored:
        # An ARN holds ":secret:", which rich would turn into an emoji.
        console.print(
            f"stored the {secret.what} in {secret.secret_id} (version {secret.version_id})", markup=False, emoji=False
        )
    console.print(
        "the functions read their secrets again within 5 minutes; jobs waiting for the key then go on by themselves"
    )
