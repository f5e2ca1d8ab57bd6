"""What the end-to-end tests read back: videos, ledger lines, and the untouched inputs."""

from __future__ import annotations

import io
import math
from decimal import Decimal

import av

from infinitetalk_core.models import Job, LedgerEntry
from local_stack import LocalStack

RATE_MICROS = {"480p": 30_000, "720p": 60_000}


def video_seconds(stack: LocalStack, key: str) -> float:
    """The stored MP4's playing time, read back from its bytes: the sound track's length as its edit
    list declares it (the AAC encoder's priming and padding outside it), which is what players play."""
    body = stack.s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
    with av.open(io.BytesIO(body), mode="r") as media:
        assert media.streams.audio, f"{key} has no sound track"
        track = media.streams.audio[0]
        assert track.duration is not None and track.time_base is not None, f"{key} declares no length"
        return float(track.duration * track.time_base)


def video_codecs(stack: LocalStack, key: str) -> set[str]:
    body = stack.s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
    found = set()
    for codec in (b"avc1", b"mp4a"):
        if codec in body:
            found.add(codec.decode())
    return found


def ledger_lines(stack: LocalStack, job: Job) -> list[LedgerEntry]:
    _, entries = stack.jobs.month(job.month)
    return [entry for entry in entries if entry.job_id == job.job_id]


def expected_charge(seconds: float | Decimal, resolution: str) -> int:
    """The seeds' rule, written out independently: whole seconds up, at least 5, times the rate."""
    return max(5, math.ceil(Decimal(str(seconds)))) * RATE_MICROS[resolution]


def snapshot(stack: LocalStack, prefix: str) -> dict[str, str]:
    """Key -> ETag of everything under a prefix: proof that inputs were not moved or changed."""
    pages = stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix)
    return {item["Key"]: item["ETag"] for page in pages for item in page.get("Contents", [])}
