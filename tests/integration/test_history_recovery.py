"""Lost submit answers recovered through WaveSpeed's prediction history, over the local stack.

A task made by a lost answer is found and adopted (delivered and charged once); a submission the
history proves empty is sent again; a history that cannot be read settles nothing; two lost answers
the times cannot tell apart are held, never guessed; a result that stays unreadable ends the job
with the money it may owe shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from infinitetalk_core.models import FailureKind, Job, JobStatus, ModelName, usd_text
from infinitetalk_core.pipeline import get_pipeline
from infinitetalk_core.reconciliation import HistoryUnreadable, read_history, reconcile, reconcile_event
from infinitetalk_core.repository import TOTAL_ALL, task_key
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.e2e.helpers import expected_charge, ledger_lines
from tests.integration.conftest import start_stack, wait_until

pytestmark = pytest.mark.integration

SKEW_SECONDS = 4  # wide enough that two drops made together overlap even on a busy machine
GRACE_SECONDS = 2


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    environment = {
        "SUBMIT_GRACE_SECONDS": str(GRACE_SECONDS),
        "HISTORY_CLOCK_SKEW_SECONDS": str(SKEW_SECONDS),
        "HISTORY_PAGE_SIZE": "1",  # every read pages, so paging is what is exercised
        "MAX_RESUBMISSIONS": "1",
        "WEBHOOK_OVERDUE_SECONDS": "2",
        "RESULT_UNREADABLE_LIMIT_SECONDS": "3",
    }
    with start_stack(environment) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults_left_behind(stack: LocalStack) -> Iterator[None]:
    yield
    stack.standin.reset_faults()


def drop(stack: LocalStack, name: str, seconds: float = 1.5) -> None:
    stack.drop_folder(name, {"image.png": portrait_png(), "audio.wav": voice_wav(seconds)}, {})


def drop_two_speakers(stack: LocalStack, name: str) -> None:
    files = {"image.png": portrait_png(), "left_audio.wav": voice_wav(1.0), "right_audio.wav": voice_wav(1.2)}
    stack.drop_folder(name, files, {})


def task_holder(stack: LocalStack, task_id: str) -> str | None:
    item = stack.aws.dynamodb.get_item(TableName=stack.ledger_table, Key=task_key(task_id), ConsistentRead=True)
    holder = item.get("Item", {}).get("job_id", {}).get("S")
    return str(holder) if holder else None


def month_total(stack: LocalStack, month: str) -> dict[str, int]:
    item = stack.aws.dynamodb.get_item(
        TableName=stack.ledger_table, Key={"pk": {"S": f"MONTH#{month}"}, "sk": {"S": TOTAL_ALL}}, ConsistentRead=True
    )["Item"]
    return {name: int(item[name]["N"]) for name in ("committed_micros", "reserved_micros", "charged_micros")}


def tasks_for(stack: LocalStack, job_id: str) -> list[str]:
    """The tasks the stand-in made for a job: its webhook URL names the job."""
    return [t.id for t in stack.standin.tasks.values() if t.webhook_url and f"job={job_id}" in t.webhook_url]


def test_a_lost_answer_whose_webhook_is_lost_too_is_found_in_the_history_delivered_and_charged_once(
    stack: LocalStack,
) -> None:
    before = stack.standin.submit_count
    stack.standin.faults.submit_500_after_create_next = 1
    stack.standin.faults.drop_webhook_next = 1
    drop(stack, "found-in-history", 2.2)
    uncertain = stack.wait_for("found-in-history", statuses={"uncertain"}, timeout=30)
    assert uncertain.task_id is None and uncertain.submit_started_at is not None

    job = stack.wait_for("found-in-history", timeout=60)
    assert job.status is JobStatus.DELIVERED, job.error
    assert stack.standin.submit_count == before + 1, "found, not submitted again"
    assert [job.task_id] == tasks_for(stack, job.job_id)
    assert not [d for d in stack.standin.webhook_deliveries if d.task_id == job.task_id], "no webhook came"
    assert (job.resubmissions, job.submit_attempts) == (0, 1)
    assert [line.charged_micros for line in ledger_lines(stack, job)] == [expected_charge(2.2, "480p")]
    assert task_holder(stack, job.task_id or "") == job.job_id
    assert stack.output_keys("found-in-history") == [
        "outputs/found-in-history/result.json",
        "outputs/found-in-history/video.mp4",
    ]


def test_a_lost_answer_that_made_no_task_is_proven_empty_and_submitted_once_more(stack: LocalStack) -> None:
    before = stack.standin.submit_count
    stack.standin.faults.submit_500_next = 1  # answered 500 before any task was made
    drop(stack, "proven-empty", 1.2)
    stack.wait_for("proven-empty", statuses={"uncertain"}, timeout=30)
    assert stack.standin.submit_count == before

    job = stack.wait_for("proven-empty", timeout=60)
    assert job.status is JobStatus.DELIVERED, job.error
    assert (job.resubmissions, job.submit_attempts) == (1, 2)
    assert stack.standin.submit_count == before + 1, "one paid task in all"
    assert [line.charged_micros for line in ledger_lines(stack, job)] == [expected_charge(1.2, "480p")]


def test_a_history_that_cannot_be_read_settles_nothing_and_sends_nothing_again(stack: LocalStack) -> None:
    before = stack.standin.submit_count
    stack.standin.faults.submit_500_next = 1
    stack.standin.faults.history_500_rate = 1.0
    drop(stack, "in-doubt", 1.0)
    uncertain = stack.wait_for("in-doubt", statuses={"uncertain"}, timeout=30)
    totals_before = month_total(stack, uncertain.month)

    # Well past the moment the history would have been trusted, several sweeps have asked and failed.
    time.sleep(GRACE_SECONDS + SKEW_SECONDS + 4)
    still = stack.jobs.get(uncertain.job_id)
    assert still is not None and still.status is JobStatus.UNCERTAIN
    assert still.model_dump() == uncertain.model_dump(), "the job row did not change"
    assert stack.standin.submit_count == before, "nothing sent again while in doubt"
    assert month_total(stack, uncertain.month) == totals_before, "its hold is kept, nothing settled"
    assert ledger_lines(stack, uncertain) == []
    assert stack.output_keys("in-doubt") == []
    assert reconcile(get_pipeline()).get("history_unavailable") == 1

    stack.standin.faults.history_500_rate = 0.0
    job = stack.wait_for("in-doubt", timeout=60)
    assert job.status is JobStatus.DELIVERED and job.resubmissions == 1
    assert stack.standin.submit_count == before + 1


def test_a_history_read_that_breaks_on_a_later_page_is_no_answer(stack: LocalStack) -> None:
    standin = stack.standin
    start = datetime.now(UTC) - timedelta(milliseconds=5)
    made = []
    with httpx.Client(base_url=standin.base_url, headers={"Authorization": f"Bearer {standin.api_key}"}) as api:
        for _ in range(2):
            body = {"image": "http://127.0.0.1:9/p.png", "audio": "http://127.0.0.1:9/a.wav"}
            made.append(api.post("/wavespeed-ai/infinitetalk/video-to-video", json={"video": body["image"], **body}))
    ids = {answer.json()["data"]["id"] for answer in made}
    window = [(start, datetime.now(UTC) + timedelta(seconds=1))]
    pipeline = get_pipeline()
    assert {task.task_id for task in read_history(pipeline, ModelName.VIDEO, window)} == ids
    standin.faults.history_500_from_page = 2  # page size 1: the second task is on page 2
    with pytest.raises(HistoryUnreadable, match="page 2"):
        read_history(pipeline, ModelName.VIDEO, window)
    wait_until(lambda: all(standin.tasks[i].is_final for i in ids))


def test_a_submission_whose_answer_is_lost_every_time_ends_proven_empty_and_uncharged(stack: LocalStack) -> None:
    before = stack.standin.submit_count
    stack.standin.faults.submit_500_next = 2  # the first try and the one resubmission (MAX_RESUBMISSIONS=1)
    drop(stack, "never-made", 1.0)
    job = stack.wait_for("never-made", timeout=60)
    assert job.status is JobStatus.FAILED and job.failure_kind is FailureKind.SUBMIT_FAILED
    assert stack.standin.submit_count == before
    assert job.reserved_micros == 0 and ledger_lines(stack, job) == []
    error = stack.read_json("outputs/never-made/error.json")
    assert "proves none of them made a task" in error["what_to_do"] and "nothing was charged" in error["what_to_do"]


def test_a_result_that_stays_unreadable_ends_the_job_with_the_money_it_may_owe_shown(stack: LocalStack) -> None:
    stack.standin.faults.drop_webhook_next = 1
    drop(stack, "unreadable", 1.0)
    submitted = stack.wait_for("unreadable", statuses={"submitted"}, timeout=30)
    stack.standin.faults.result_500_rate = 1.0
    totals_before = month_total(stack, submitted.month)
    job = stack.wait_for("unreadable", timeout=60)
    stack.standin.faults.result_500_rate = 0.0
    assert job.status is JobStatus.FAILED and job.failure_kind is FailureKind.RESULT_UNREADABLE
    assert job.task_id == submitted.task_id and job.reserved_micros == submitted.estimate_micros
    error = stack.read_json("outputs/unreadable/error.json")
    assert error["possibly_owed_usd"] == usd_text(submitted.estimate_micros) == "$0.15"
    assert error["task_id"] == submitted.task_id and "possibly owed" in error["problems"][0]
    assert month_total(stack, job.month) == totals_before, "the estimate stays held against the budget"
    assert ledger_lines(stack, job) == []
    # Ended: no longer asked about.
    assert reconcile(get_pipeline()).get("result_unavailable", 0) == 0


def test_two_lost_answers_the_times_cannot_tell_apart_are_held_and_an_operator_settles_them(
    stack: LocalStack,
) -> None:
    before = stack.standin.submit_count
    stack.standin.faults.submit_500_after_create_next = 2
    stack.standin.faults.drop_webhook_next = 2
    drop_two_speakers(stack, "twin-a")
    drop_two_speakers(stack, "twin-b")
    a = stack.wait_for("twin-a", statuses={"held"}, timeout=60)
    b = stack.wait_for("twin-b", statuses={"held"}, timeout=60)
    assert stack.standin.submit_count == before + 2
    made = {job.job_id: tasks_for(stack, job.job_id) for job in (a, b)}
    assert all(len(ids) == 1 for ids in made.values())
    for job in (a, b):
        assert job.task_id is None and ledger_lines(stack, job) == []
        for named in (a.job_id, b.job_id, *made[a.job_id], *made[b.job_id]):
            assert named in (job.error or ""), "the message names every candidate task and job"
        error = stack.read_json(f"outputs/{job.job_name}/error.json")
        assert error["status"] == "held" and "Do not upload again" in error["what_to_do"]
        assert error["possibly_owed_usd"] == usd_text(job.estimate_micros)
    assert all(task_holder(stack, ids[0]) is None for ids in made.values()), "nothing was given to anyone"

    counts = reconcile(get_pipeline())
    assert counts.get("held_ambiguous") == 2, counts  # the alarm's metric, every sweep while held
    assert {j.status for j in (stack.jobs.get(a.job_id), stack.jobs.get(b.job_id)) if j} == {JobStatus.HELD}

    # The operator looks at the tasks and says which is a's; b's then follows from the times alone.
    wrong = {"resolve_job": a.job_id, "task_id": "f" * 32}
    with pytest.raises(Exception, match="does not show task"):
        reconcile_event(wrong, get_pipeline())
    assert reconcile_event({"resolve_job": a.job_id, "task_id": made[a.job_id][0]}, get_pipeline()) == {
        "lost_submit_adopted": 1
    }
    delivered: list[Job] = [stack.wait_for(name, timeout=60) for name in ("twin-a", "twin-b")]
    assert [job.status for job in delivered] == [JobStatus.DELIVERED] * 2, [job.error for job in delivered]
    assert [job.task_id for job in delivered] == [made[a.job_id][0], made[b.job_id][0]]
    assert stack.standin.submit_count == before + 2
    for job in delivered:
        assert len(ledger_lines(stack, job)) == 1
        assert task_holder(stack, job.task_id or "") == job.job_id
        assert "outputs/" + job.job_name + "/error.json" not in stack.output_keys(job.job_name)
