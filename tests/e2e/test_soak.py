"""A small soak on every run of the suite: three dozen jobs with every fault on at once, no loss, one charge each.

``make soak`` runs the same with a thousand jobs; this one shortens the waits (the grace before a
history lookup, the overdue time, the submit timeout) so it settles within a couple of minutes, and
forces one crash at each crash point so every one of them is walked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from local_stack.faults import CRASH_POINTS
from local_stack.soak import SoakPlan, run_soak

pytestmark = pytest.mark.e2e

JOBS = 36


def test_three_dozen_jobs_with_every_fault_on_at_once_all_end_once_and_are_charged_once(tmp_path: Path) -> None:
    plan = SoakPlan(
        jobs=JOBS,
        drops_per_second=3.0,
        settle_timeout_seconds=150,
        poll_seconds=2,
        environment={"SUBMIT_GRACE_SECONDS": "3", "WEBHOOK_OVERDUE_SECONDS": "6", "HTTP_TIMEOUT_SECONDS": "5"},
        function_timeouts={"submit": 15.0},
        crash_next=dict.fromkeys(CRASH_POINTS, 1),
        log_path=tmp_path / "soak.log",
        progress=lambda line: None,
    )
    report = run_soak(plan)

    assert report.ok, report.text()
    assert len(report.checks) == 9
    # Every fault really happened, so the invariants above held through them, not around them.
    for point in CRASH_POINTS:
        assert report.injected[f"crash:{point}"] >= 1, (point, report.text())
    assert report.injected["transaction_conflict"] > 0 and report.injected["throttle"] > 0
    assert report.injected["s3_event_copy"] >= JOBS * 4  # four more copies of every job's triggering event
    facts = dict(report.facts)
    assert facts["jobs"].startswith(f"{JOBS} dropped")
