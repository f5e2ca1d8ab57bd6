"""Without pacing, a burst meets the account's 429s, and they lose no job and make no second task.

A module of its own: one local stack runs in a process at a time, and ``test_submit_pacing`` holds one.
"""

from __future__ import annotations

from collections import Counter

from tests.integration.conftest import start_stack, wait_until
from tests.integration.test_submit_pacing import CONCURRENCY, DROPS, drop_manifests, statuses


def test_unpaced_drops_meet_429s_and_every_job_is_still_submitted_once() -> None:
    with start_stack(
        parameters={"SubmitRatePerSecond": "0", "SubmitConcurrency": str(CONCURRENCY)},
        rate_limit_per_second=2.0,
        min_processing_seconds=3600,
    ) as stack:
        drop_manifests(stack, "unpaced", DROPS)
        wait_until(lambda: stack.standin.submit_count >= DROPS, timeout=180)
        wait_until(lambda: statuses(stack, "unpaced") == Counter({"submitted": DROPS}), timeout=30)
        assert stack.standin.rate_limit.refused > 0
        assert stack.standin.submit_count == DROPS  # one task per job: a 429 created none
