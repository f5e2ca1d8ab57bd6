"""The local stack runs the functions as Lambda would: at once, within their timeouts, and through crashes.

Each test turns one fault of ``local_stack.faults`` on for one job and proves, from the stored
state, that the job still ends once: one WaveSpeed task, one ledger line, its video whole.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest

from infinitetalk_core import storage
from infinitetalk_core.callbacks import REPORTABLE_FROM
from infinitetalk_core.models import Job, JobStatus
from infinitetalk_core.repository import DeliveryProof, ReportNotRecorded, task_key
from local_stack import LocalStack, StackOptions
from local_stack.samples import portrait_png, voice_wav
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

SUBMIT_TIMEOUT = 3.0
FILES = {"image.png": portrait_png(width=256, height=256), "audio.wav": voice_wav(1.0)}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    options = StackOptions(
        parameters={"FolderSettleSeconds": "3"},
        environment={"SUBMIT_GRACE_SECONDS": "2", "WEBHOOK_OVERDUE_SECONDS": "3", "HTTP_TIMEOUT_SECONDS": "5"},
        reconcile_every_seconds=1.0,
        # Visibility timeouts of a few seconds, so a timed-out batch comes back within the test.
        timeout_scale=0.005,
        function_timeouts={"submit": SUBMIT_TIMEOUT},
    )
    with LocalStack(options) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults_left_behind(stack: LocalStack) -> Iterator[None]:
    yield
    stack.options.faults.reset()
    stack.standin.reset_faults()


def tasks_of(stack: LocalStack, job: Job) -> list[str]:
    return [task.id for task in stack.standin.tasks.values() if f"job={job.job_id}&" in (task.webhook_url or "")]


def ledger_lines(stack: LocalStack, job: Job) -> list[int]:
    _, entries = stack.jobs.month(job.month)
    return [entry.charged_micros for entry in entries if entry.job_id == job.job_id]


def delivered_once(stack: LocalStack, name: str, timeout: float = 90) -> Job:
    job = stack.wait_for(name, timeout=timeout)
    assert job.status is JobStatus.DELIVERED, job.error
    assert len(tasks_of(stack, job)) == 1
    assert ledger_lines(stack, job) == [150_000]  # 1 s of speech, billed the 5-second minimum at 480p
    body = stack.s3.get_object(Bucket=stack.bucket, Key=job.output_keys[0])["Body"].read()
    with av.open(io.BytesIO(body), mode="r") as video:
        assert any(True for _ in video.decode(video=0))
    return job


def test_a_submission_past_its_timeout_is_given_up_on_its_message_comes_back_and_its_post_never_leaves(
    stack: LocalStack,
) -> None:
    submit = stack.functions["submit"]
    (poller,) = [p for p in stack.pollers if p.function is submit]
    timeouts_before, submits_before = submit.counts.timeouts, stack.standin.submit_count
    stack.options.faults.submit_post_delay_seconds = SUBMIT_TIMEOUT + 2  # the POST would leave after the timeout
    stack.drop_folder("hung-submit", FILES, {})
    wait_until(lambda: submit.counts.timeouts > timeouts_before, timeout=30)
    stack.options.faults.submit_post_delay_seconds = 0
    time.sleep(3)
    # The abandoned run woke up and tried its POST: refused before it left, so no task exists.
    assert stack.standin.submit_count == submits_before
    wait_until(lambda: bool(poller.timed_out & poller.received_again), timeout=30)

    job = delivered_once(stack, "hung-submit")
    # The history proved the abandoned run made no task, so the job was submitted again, once.
    assert job.resubmissions == 1
    assert stack.standin.submit_count == submits_before + 1


def test_a_crash_after_the_charge_publishes_the_event_on_the_next_delivery_and_charges_once(stack: LocalStack) -> None:
    fetch = stack.functions["fetch"]
    crashes = fetch.counts.crashes
    stack.options.faults.crash_functions = {"FetchFunction"}
    stack.options.faults.crash_next = {"after_charge": 1}
    stack.drop_folder("crash-after-charge", FILES, {})
    job = delivered_once(stack, "crash-after-charge")
    wait_until(lambda: (stack.jobs.get(job.job_id) or job).event_published, timeout=30)
    assert fetch.counts.crashes == crashes + 1
    assert stack.options.faults.injected["crash:after_charge"] >= 1


def test_a_callback_crashing_after_recording_the_report_still_gets_its_job_fetched(stack: LocalStack) -> None:
    callback = stack.functions["callback"]
    crashes = callback.counts.crashes
    stack.options.faults.crash_functions = {"CallbackFunction"}
    stack.options.faults.crash_next = {"after_job_write": 1}
    stack.drop_folder("crash-in-callback", FILES, {})
    job = delivered_once(stack, "crash-in-callback")
    assert callback.counts.crashes == crashes + 1
    # WaveSpeed got a 500 for the crashed delivery and sent it again: a replay, which queues nothing;
    # reconcile found the reported job without its fetch and queued it.
    answers = [d.http_status for d in stack.standin.webhook_deliveries if d.task_id == job.task_id]
    assert answers[:2] == [500, 200]


def test_a_result_read_failing_for_a_moment_is_asked_again_within_the_same_fetch(stack: LocalStack) -> None:
    """Else each 500 costs the fetch queue's visibility timeout (90 minutes in AWS) and a step towards its DLQ."""
    fetch = stack.functions["fetch"]
    errors = fetch.counts.errors
    stack.standin.faults.result_500_next = 2  # the fetch reads the result three times at most
    stack.drop_folder("result-blip", FILES, {})
    delivered_once(stack, "result-blip")
    assert stack.standin.faults.result_500_next == 0
    assert fetch.counts.errors == errors


def test_a_fetch_crashing_mid_multipart_upload_leaves_no_video_half_written(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.STREAMING_TRANSFER, "multipart_threshold", 1024)
    stack.options.faults.crash_functions = {"FetchFunction"}
    stack.options.faults.crash_next = {"mid_upload": 1}
    stack.drop_folder("crash-mid-upload", FILES, {})
    job = delivered_once(stack, "crash-mid-upload")
    assert stack.options.faults.injected["crash:mid_upload"] >= 1
    # The crashed run's upload was never completed nor aborted (the bucket's lifecycle rule aborts it).
    unfinished = stack.s3.list_multipart_uploads(Bucket=stack.bucket, Prefix=f"outputs/{job.job_name}/")
    assert [upload["Key"] for upload in unfinished.get("Uploads", [])] == [job.output_keys[0]]
    assert stack.output_keys(job.job_name) == sorted([job.output_keys[0], f"outputs/{job.job_name}/result.json"])


def test_a_crash_right_after_wavespeed_took_the_submit_is_found_in_the_history_once_the_run_is_over(
    stack: LocalStack,
) -> None:
    stack.options.faults.crash_functions = {"SubmitFunction"}
    stack.options.faults.crash_next = {"after_submit": 1}
    stack.standin.faults.drop_webhook_next = 1  # no webhook comes to the rescue
    stack.drop_folder("crash-after-submit", FILES, {})
    job = delivered_once(stack, "crash-after-submit", timeout=120)
    assert job.resubmissions == 0  # the task the crashed run made was adopted, not made again
    assert stack.options.faults.injected["crash:after_submit"] == 1


def test_conflicts_throttling_and_repeated_events_at_once_still_make_one_job_one_task_one_charge(
    stack: LocalStack,
) -> None:
    faults = stack.options.faults
    faults.transaction_conflict_rate = 0.4
    faults.throttle_rate = 0.15
    faults.s3_event_copies = 5
    submit = stack.functions["submit"]
    names = [f"crowd-{index}" for index in range(8)]
    for name in names:
        stack.drop_folder(name, FILES, {})
    for name in names:
        delivered_once(stack, name)
    assert faults.injected["transaction_conflict"] > 0 and faults.injected["throttle"] > 0
    assert faults.injected["s3_event_copy"] >= 8 * 3 * 4  # three files each, four copies of each event
    assert 2 <= submit.counts.peak_concurrency <= submit.concurrency == 5  # the template's SubmitConcurrency
    assert stack.functions["reconcile"].counts.peak_concurrency == 1  # ReservedConcurrentExecutions: 1


def test_a_webhook_holds_its_task_for_the_job_in_the_same_write_that_records_it(stack: LocalStack) -> None:
    faults = stack.standin.faults
    faults.submit_500_after_create_next = 1  # the task is made, its id never reaches the job
    faults.drop_webhook_next = 1
    faults.history_500_rate = 1.0  # and the history cannot settle it meanwhile
    stack.drop_folder("held-at-report", FILES, {})
    job = stack.wait_for("held-at-report", statuses={"uncertain"}, timeout=60)
    assert job.spec is not None
    (task_id,) = tasks_of(stack, job)
    ledger, dynamodb = stack.ledger_table, stack.aws.dynamodb

    def holder() -> str | None:
        item = dynamodb.get_item(TableName=ledger, Key=task_key(task_id), ConsistentRead=True).get("Item")
        return item["job_id"]["S"] if item else None

    model = job.spec.model.value
    assert holder() is None
    # A report the job's row refuses (a wrong token) writes no hold either: it is one transaction.
    with pytest.raises(ReportNotRecorded):
        stack.jobs.report_task(job.job_id, task_id, model, REPORTABLE_FROM, proof=DeliveryProof("a", "wrong"))
    assert holder() is None
    # An accepted one records the report and holds the task for the job, together.
    stack.jobs.report_task(job.job_id, task_id, model, REPORTABLE_FROM, proof=DeliveryProof("b", job.webhook_token))
    reported = stack.jobs.get(job.job_id)
    assert reported is not None and reported.status is JobStatus.REPORTED and holder() == job.job_id
    faults.history_500_rate = 0.0
    delivered_once(stack, "held-at-report")  # reconcile finds the reported job and queues its fetch


def test_the_connection_file_names_the_standin_so_a_wavespeed_client_can_use_it(
    stack: LocalStack, tmp_path: Path
) -> None:
    document = json.loads(stack.write_connection_file(tmp_path / "stack.json").read_text())
    headers = {"Authorization": f"Bearer {document['wavespeed_api_key']}"}
    secret = httpx.get(f"{document['wavespeed_base_url']}/webhook/secret", headers=headers, timeout=10)
    assert secret.status_code == 200 and secret.json()["data"]["secret"].startswith("whsec_")
    page = httpx.post(
        f"{document['wavespeed_base_url']}/predictions", json={"page": 1, "page_size": 5}, headers=headers, timeout=10
    )
    assert page.status_code == 200 and page.json()["data"]["total"] >= 1
    refused = httpx.get(f"{document['wavespeed_base_url']}/webhook/secret", timeout=10)
    assert refused.status_code == 401
