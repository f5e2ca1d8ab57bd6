"""A lost submit answer whose webhook is lost too, end to end: found in WaveSpeed's history, delivered, charged once.

The least-privilege check sees here what the history lookup needs (reading which job holds a task).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infinitetalk_core.models import JobStatus
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.e2e.helpers import expected_charge, ledger_lines, snapshot
from tests.integration.conftest import start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack({"SUBMIT_GRACE_SECONDS": "2"}) as running:
        yield running


def test_a_task_made_by_a_lost_answer_is_adopted_from_the_history_and_charged_once(stack: LocalStack) -> None:
    before = stack.standin.submit_count
    stack.standin.faults.submit_500_after_create_next = 1
    stack.standin.faults.drop_webhook_next = 1
    files = {"image.png": portrait_png(), "left_audio.wav": voice_wav(1.0), "right_audio.wav": voice_wav(2.0)}
    stack.drop_folder("lost-twice", files, {"order": "left_right"})
    inputs = snapshot(stack, "inbox/lost-twice/")

    job = stack.wait_for("lost-twice", timeout=90)

    assert job.status is JobStatus.DELIVERED, job.error
    assert stack.standin.submit_count == before + 1
    assert job.resubmissions == 0 and job.task_id in stack.standin.tasks
    assert not [d for d in stack.standin.webhook_deliveries if d.task_id == job.task_id]
    assert [line.charged_micros for line in ledger_lines(stack, job)] == [expected_charge(3.0, "480p")]
    assert snapshot(stack, "inbox/lost-twice/") == inputs
