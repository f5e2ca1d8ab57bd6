"""Outbound requests and delivery edges over real HTTP: moto's server, the stand-in, the template's functions.

Hostile task ids, output URLs redirected off the allow-list, outputs over the byte cap, a task
completed without a video, and a refused drop of the same name while a job runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from infinitetalk_core.models import FailureKind, Job, JobSpec, JobStatus, ModelName, Role
from infinitetalk_core.outbound import OutputDownloader, OutputPolicy
from infinitetalk_core.pipeline import build_pipeline
from infinitetalk_core.settings import get_settings
from infinitetalk_core.submission import submit
from infinitetalk_core.wavespeed import NotATaskId
from infinitetalk_core.wavespeed_client import WaveSpeedClient
from local_stack import LocalStack
from local_stack.calls import CallRecorder
from local_stack.samples import portrait_png, voice_wav
from tests.e2e.helpers import expected_charge, ledger_lines
from tests.integration.conftest import start_stack, wait_until
from tests.unit.test_outbound import CountingServer

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
OUTPUT_CAP = 9 * MIB  # above the first 8 MiB part, so an oversized output starts a multipart upload


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack({"OUTPUT_MAX_BYTES": str(OUTPUT_CAP)}) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults(stack: LocalStack) -> Iterator[None]:
    stack.standin.reset_faults()
    yield
    stack.standin.reset_faults()


@pytest.fixture
def trap() -> Iterator[CountingServer]:
    """A server on 127.0.0.1 that must never be reached."""
    server = CountingServer()
    try:
        yield server
    finally:
        server.close()


def month_charged(stack: LocalStack, month: str) -> int:
    totals, _ = stack.jobs.month(month)
    return next((t.charged_micros for t in totals if t.model is None), 0)


def month_now() -> str:
    return time.strftime("%Y-%m", time.gmtime())


def no_dead_letters(stack: LocalStack) -> bool:
    return all(count == 0 for count in stack.dead_letters().values())


def queue_empty(stack: LocalStack, logical_id: str) -> bool:
    attributes = stack.sqs.get_queue_attributes(
        QueueUrl=stack.resource(logical_id),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(int(value) == 0 for value in attributes.values())


def api_client(stack: LocalStack, http: httpx.Client) -> WaveSpeedClient:
    outputs = OutputDownloader.build(OutputPolicy.parse(stack.standin.root_url), httpx.Timeout(10))
    return WaveSpeedClient(stack.standin.base_url, lambda: stack.standin.api_key, http, outputs=outputs)


# ---- task ids --------------------------------------------------------------------------------------


def test_a_hostile_task_id_never_reaches_another_api_path_with_the_key(stack: LocalStack) -> None:
    sent: list[httpx.Request] = []
    with httpx.Client(timeout=10, trust_env=False, event_hooks={"request": [sent.append]}) as http:
        # The danger is real: the path an unchecked id builds is the webhook-secret endpoint.
        key = {"Authorization": f"Bearer {stack.standin.api_key}"}
        leaked = http.get(f"{stack.standin.base_url}/predictions/../webhook/secret#/result", headers=key)
        assert leaked.json()["data"]["secret"] == stack.standin.webhook_secret
        sent.clear()
        client = api_client(stack, http)
        for hostile in ("../webhook/secret#", "../../webhook/secret#", "..%2fwebhook%2fsecret"):
            with pytest.raises(NotATaskId):
                client.result(hostile)
    assert sent == []


class RewrittenSubmitAnswer(httpx.BaseTransport):
    """Passes every request to the stand-in and changes the id in its submit answer, as a hostile answer would."""

    def __init__(self, task_id: str) -> None:
        self.inner = httpx.HTTPTransport(trust_env=False)
        self.task_id = task_id
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        response = self.inner.handle_request(request)
        if request.method != "POST" or "/media/" in request.url.path:
            return response
        payload = json.loads(response.read())
        payload["data"]["id"] = self.task_id
        return httpx.Response(response.status_code, json=payload)


def test_a_submit_answer_with_a_hostile_id_leaves_the_job_uncertain_and_builds_no_url(stack: LocalStack) -> None:
    stack.put("library/odd-id/image.png", portrait_png())
    stack.put("library/odd-id/audio.wav", voice_wav(1.0))
    now = time.time()
    job = Job.model_validate(
        {
            "job_id": f"odd-id-{int(now)}",
            "job_name": "odd-id",
            "status": JobStatus.RECEIVED,
            "status_since": now,
            "created_at": now,
            "spec": JobSpec(
                name="odd-id",
                model=ModelName.SINGLE,
                inputs={Role.IMAGE: "library/odd-id/image.png", Role.AUDIO: "library/odd-id/audio.wav"},
            ),
            "month": month_now(),
            "rule_set": "seeds-output-5s",
            "input_seconds": Decimal(1),
            "estimate_micros": 150_000,
            "reserved_micros": 150_000,
        }
    )
    rewriting = RewrittenSubmitAnswer("../webhook/secret#")
    base = build_pipeline(get_settings())
    pipeline = dataclasses.replace(base, wavespeed=api_client(stack, httpx.Client(transport=rewriting, timeout=10)))
    pipeline.jobs.create_with_reservation(job, budget_micros=0)
    stack.standin.faults.drop_webhook_next = 1  # keep the real task's webhook from settling the job meanwhile
    created_before = stack.standin.submit_count

    submit(job, pipeline)

    stored = stack.jobs.get(job.job_id)
    assert stored is not None and stored.status is JobStatus.UNCERTAIN and stored.task_id is None
    assert "unreadable submit answer" in (stored.error or "") and "task id" in (stored.error or "")
    assert stack.standin.submit_count == created_before + 1, "the task exists: it must not be submitted again"
    assert rewriting.sent == ["POST /api/v3/wavespeed-ai/infinitetalk"]


# ---- output downloads ------------------------------------------------------------------------------


def test_the_local_stack_allows_exactly_its_own_stand_in(stack: LocalStack) -> None:
    assert os.environ["OUTPUT_HOSTS"] == stack.standin.root_url
    assert get_settings().output_policy.describe() == stack.standin.root_url


def test_an_output_redirected_off_the_allow_list_is_refused_settled_once_and_not_fetched(
    stack: LocalStack, trap: CountingServer
) -> None:
    stack.standin.faults.output_redirect_url = f"http://127.0.0.1:{trap.port}/latest/meta-data/"
    charged_before = month_charged(stack, month_now())
    stack.drop_folder("redirected", {"image.png": portrait_png(), "audio.wav": voice_wav(2.0)}, {})
    job = stack.wait_for("redirected", timeout=60)

    assert job.status is JobStatus.FAILED and job.failure_kind is FailureKind.DELIVERY_FAILED
    assert "redirected away" in (job.error or "") and "not on the allowed output hosts" in (job.error or "")
    assert trap.requests == []
    (line,) = ledger_lines(stack, job)
    assert line.outcome == "failed" and line.charged_micros == expected_charge(2.0, "480p") == job.estimate_micros
    assert month_charged(stack, job.month) - charged_before == line.charged_micros
    assert stack.output_keys("redirected") == ["outputs/redirected/error.json"]
    error = stack.read_json("outputs/redirected/error.json")
    assert error["failure_kind"] == "delivery_failed" and "OutputHosts" in error["what_to_do"]
    assert no_dead_letters(stack)


def test_an_output_over_the_byte_cap_is_aborted_whole_charged_once_and_never_forgotten(stack: LocalStack) -> None:
    stack.standin.faults.output_padding_bytes = 12 * MIB
    with CallRecorder() as recorder:
        stack.drop_folder("too-big", {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)}, {})
        job = stack.wait_for("too-big", timeout=60)

    assert job.status is JobStatus.FAILED and job.failure_kind is FailureKind.DELIVERY_FAILED
    assert f"the limit is {OUTPUT_CAP} bytes" in (job.error or "") and "OUTPUT_MAX_BYTES" in (job.error or "")
    assert stack.output_keys("too-big") == ["outputs/too-big/error.json"]
    uploads = stack.s3.list_multipart_uploads(Bucket=stack.bucket, Prefix="outputs/").get("Uploads", [])
    assert uploads == [], "no half-written object may be left behind"
    fetch_calls = [
        call.operation
        for call in recorder.by_function().get("FetchFunction", [])
        if call.target.get("Key") == "outputs/too-big/video.mp4"
    ]
    assert "CreateMultipartUpload" in fetch_calls and "AbortMultipartUpload" in fetch_calls
    assert "CompleteMultipartUpload" not in fetch_calls and "PutObject" not in fetch_calls
    (line,) = ledger_lines(stack, job)
    assert line.charged_micros == job.estimate_micros == expected_charge(1.0, "480p")

    # Fetching again (a repeated message) changes nothing: charged once.
    stack.sqs.send_message(QueueUrl=stack.resource("FetchQueue"), MessageBody=json.dumps({"job_id": job.job_id}))
    wait_until(lambda: queue_empty(stack, "FetchQueue"), timeout=30)
    again = stack.jobs.get(job.job_id)
    assert again is not None and (again.status, again.charged_micros, again.error) == (
        job.status,
        job.charged_micros,
        job.error,
    )
    assert len(ledger_lines(stack, job)) == 1
    assert no_dead_letters(stack)


def test_a_completed_task_without_a_video_is_failed_and_charged_as_a_failed_task(stack: LocalStack) -> None:
    stack.standin.faults.empty_outputs_next = 1
    charged_before = month_charged(stack, month_now())
    stack.drop_folder("no-video", {"image.png": portrait_png(), "audio.wav": voice_wav(2.0)}, {})
    job = stack.wait_for("no-video", timeout=60)

    assert job.status is JobStatus.FAILED and job.failure_kind is FailureKind.GENERATION_FAILED
    assert job.error == "WaveSpeed reported the task completed but returned no video"
    (line,) = ledger_lines(stack, job)
    # Both published rule sets charge nothing for a task that made no video.
    assert line.outcome == "failed" and line.charged_micros == 0 == job.charged_micros
    assert month_charged(stack, job.month) == charged_before
    assert stack.output_keys("no-video") == ["outputs/no-video/error.json"]
    error = stack.read_json("outputs/no-video/error.json")
    assert error["problems"] == ["WaveSpeed reported the task completed but returned no video"]
    assert no_dead_letters(stack)


# ---- the newest job of a name is the newest accepted one ------------------------------------------


def test_a_refused_drop_of_the_same_name_does_not_move_a_running_jobs_video(stack: LocalStack) -> None:
    stack.standin.faults.webhook_delay_seconds = 6.0
    stack.drop_folder("anchor", {"image.png": portrait_png(), "audio.wav": voice_wav(1.5)}, {})
    good = stack.wait_for("anchor", statuses={"submitted"}, timeout=30)
    task_id = good.task_id or ""
    # Once the stand-in has rendered the video, a re-upload of the folder cannot change it.
    wait_until(lambda: stack.standin.tasks[task_id].status == "completed", timeout=30)
    stack.standin.faults.webhook_delay_seconds = 0.0

    stack.put("inbox/anchor.png", portrait_png())  # a stray file of the same name
    stack.drop_folder("anchor", {"image.png": b"this is not an image"}, {})  # a broken re-upload

    def refused() -> list[Job]:
        return [j for j in stack.jobs.by_name("anchor") if j.status is JobStatus.REJECTED]

    wait_until(lambda: len(refused()) == 2, timeout=30)
    running = stack.jobs.get(good.job_id)
    assert running is not None and running.status is JobStatus.SUBMITTED, "the refusals must come first"

    wait_until(lambda: (stack.jobs.get(good.job_id) or good).status is JobStatus.DELIVERED, timeout=60)
    keys = stack.output_keys("anchor")
    assert "outputs/anchor/video.mp4" in keys
    assert stack.read_json("outputs/anchor/result.json")["job_id"] == good.job_id
    assert not [key for key in keys if key.startswith(f"outputs/anchor/{good.job_id}/")]
    # The refusal is newer than the video: its error file stays, naming the refused drop.
    assert stack.read_json("outputs/anchor/error.json")["job_id"] in {j.job_id for j in refused()}
    assert no_dead_letters(stack)
