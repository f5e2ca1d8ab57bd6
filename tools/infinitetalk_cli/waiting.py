"""Follow the newest job of a name until it is finished, and gather what it left in ``outputs/<name>/``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from infinitetalk_core.intake import drop_for_key
from infinitetalk_core.models import TERMINAL_STATUSES, Job
from infinitetalk_core.pipeline import ERROR_FILE, RESULT_FILE
from infinitetalk_core.repository import JobRepository
from infinitetalk_core.storage import INBOX_PREFIX, MediaBucket, StoredObject, outputs_prefix

# S3 and the functions keep different clocks; a job made this soon before the newest upload may be its job.
CLOCK_SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class WaitResult:
    job: Job | None
    finished: bool


@dataclass(frozen=True)
class Failure:
    problems: list[str]
    what_to_do: str | None = None


def newest_upload(bucket: MediaBucket, name: str) -> datetime | None:
    """When the newest object of the name's drop (folder or manifest) arrived.

    A job made before that belongs to an earlier drop: waiting on it right after a new ``drop``
    would hand back the old video.
    """
    objects = bucket.list(f"{INBOX_PREFIX}{name}/") + bucket.list(f"{INBOX_PREFIX}{name}.json")
    times = [o.last_modified for o in objects if (d := drop_for_key(o.key)) is not None and d.name == name]
    return max(times, default=None)


def job_of_drop(found: list[Job], not_before: datetime | None) -> Job | None:
    """The newest job of a name (``found`` newest first), if it was made from the newest drop."""
    candidate = found[0] if found else None
    if candidate is not None and (not_before is None or candidate.created_at >= not_before - CLOCK_SLACK):
        return candidate
    return None


def error_document(bucket: MediaBucket, job: Job) -> dict[str, Any] | None:
    """The job's ``error.json``, when the one under ``outputs/<name>/`` is about this job."""
    key = outputs_prefix(job.job_name) + ERROR_FILE
    if bucket.head(key) is None:
        return None
    try:
        document = json.loads(bucket.read_bytes(key))
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("job_id") not in {None, job.job_id}:
        return None
    return document


def wait_for(
    jobs: JobRepository,
    name: str,
    not_before: datetime | None,
    timeout: float,
    poll: float,
    on_change: Callable[[Job | None], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Poll the newest job of ``name`` until it is terminal or ``timeout`` seconds have passed."""
    deadline = clock() + timeout
    seen: tuple[str, str] | None = None
    job: Job | None = None
    first = True
    while True:
        job = job_of_drop(jobs.by_name(name), not_before) or job
        state = (job.job_id, job.status.value) if job else None
        if first or state != seen:
            on_change(job)
            seen, first = state, False
        if job is not None and job.status in TERMINAL_STATUSES:
            return WaitResult(job=job, finished=True)
        remaining = deadline - clock()
        if remaining <= 0:
            return WaitResult(job=job, finished=False)
        sleep(min(poll, remaining))


def delivered_objects(bucket: MediaBucket, job: Job) -> list[StoredObject]:
    """The job's videos and its ``result.json``; leftovers of older jobs of the same name are skipped."""
    prefix = outputs_prefix(job.job_name)
    wanted = set(job.output_keys) | {prefix + RESULT_FILE}
    stored = bucket.list(prefix)
    if not job.output_keys:
        return [o for o in stored if o.filename != ERROR_FILE]
    return [o for o in stored if o.key in wanted]


def failure_of(bucket: MediaBucket, job: Job) -> Failure:
    """What went wrong, from the job's ``error.json`` when it is this job's, else from the job row."""
    fallback = Failure(problems=[job.error or f"the job is {job.status.value} without an error message"])
    document = error_document(bucket, job)
    if document is None:
        return fallback
    problems = [str(p) for p in document.get("problems") or []] or fallback.problems
    what_to_do = document.get("what_to_do")
    return Failure(problems=problems, what_to_do=str(what_to_do) if what_to_do else None)
