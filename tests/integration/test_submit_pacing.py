"""Submissions keep to ``SubmitRatePerSecond`` across every submit instance, against a stand-in that
answers 429 above its account limit (without pacing: ``test_submit_unpaced``)."""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from infinitetalk_core.repository import JobRepository
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.integration.conftest import start_stack, wait_until

RATE = 3.0
ACCOUNT_LIMIT = 4.0
CONCURRENCY = 5
DROPS = 24


def drop_manifests(stack: LocalStack, prefix: str, count: int) -> None:
    stack.put(f"library/{prefix}/image.png", portrait_png())
    stack.put(f"library/{prefix}/audio.wav", voice_wav(1.0))
    manifest = {"inputs": {"image": f"library/{prefix}/image.png", "audio": f"library/{prefix}/audio.wav"}}
    for index in range(count):
        stack.put(f"inbox/{prefix}-{index:02d}.json", json.dumps(manifest).encode())


def statuses(stack: LocalStack, prefix: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for index in range(DROPS):
        job = stack.newest_job(f"{prefix}-{index:02d}")
        found[job.status.value if job else "no job"] += 1
    return found


def most_in_any_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max((sum(1 for t in ordered[i:] if t < start + window) for i, start in enumerate(ordered)), default=0)


@pytest.fixture(scope="module")
def paced() -> Iterator[LocalStack]:
    with start_stack(
        parameters={"SubmitRatePerSecond": f"{RATE:g}", "SubmitConcurrency": str(CONCURRENCY)},
        rate_limit_per_second=ACCOUNT_LIMIT,
        min_processing_seconds=3600,  # tasks stay in processing: only the submissions are looked at
    ) as stack:
        yield stack


def test_a_burst_of_drops_reaches_wavespeed_at_the_set_rate_and_never_meets_a_429(paced: LocalStack) -> None:
    drop_manifests(paced, "paced", DROPS)
    wait_until(lambda: paced.standin.submit_count >= DROPS, timeout=120)
    wait_until(lambda: statuses(paced, "paced") == Counter({"submitted": DROPS}), timeout=30)

    passed = paced.standin.rate_limit.passed_at
    assert len(passed) == DROPS
    assert paced.standin.rate_limit.refused == 0
    # A slot is 1/RATE s and each is handed out once, so the burst takes as long as its slots: a POST may
    # arrive a little late on a busy machine (so arrivals can bunch up), but never before its slot begins.
    span = max(passed) - min(passed)
    assert span >= (DROPS - 1) / RATE - 1.0
    assert most_in_any_window(passed, 5.0) <= math.ceil(5 * RATE) + 4
    assert paced.functions["submit"].counts.peak_concurrency > 1  # the instances really ran side by side


def test_slots_are_handed_out_once_each_however_many_take_them_at_once(paced: LocalStack) -> None:
    jobs = JobRepository(paced.aws.dynamodb, paced.jobs_table, paced.ledger_table)
    taken: list[int] = []
    lock = threading.Lock()
    start = 10**9

    def take(count: int) -> None:
        for _ in range(count):
            slot = jobs.take_rate_slot("test", start)
            with lock:
                taken.append(slot)

    threads = [threading.Thread(target=take, args=(10,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(taken) == list(range(start, start + 80))
    # Later, with the queue behind the clock, the first taker gets the slot of now again.
    assert jobs.take_rate_slot("test", start + 1_000) == start + 1_000
    assert jobs.take_rate_slot("test", start + 1_000) == start + 1_001
