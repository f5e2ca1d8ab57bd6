"""Repeated events, lost and forged webhooks, rate limits and errors: one job, one charge, nothing lost."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from infinitetalk_core.models import JobStatus
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.e2e.helpers import expected_charge, ledger_lines
from tests.integration.conftest import start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack({"WEBHOOK_OVERDUE_SECONDS": "3"}) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults_left_behind(stack: LocalStack) -> Iterator[None]:
    yield
    stack.standin.reset_faults()
    stack.api.options.base64_bodies = False


def drop(stack: LocalStack, name: str, seconds: float = 1.5) -> None:
    stack.drop_folder(name, {"image.png": portrait_png(), "audio.wav": voice_wav(seconds)}, {})


def s3_event(stack: LocalStack, key: str) -> str:
    head = stack.s3.head_object(Bucket=stack.bucket, Key=key)
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": stack.bucket, "arn": f"arn:aws:s3:::{stack.bucket}"},
            "object": {"key": key, "size": head["ContentLength"], "eTag": head["ETag"].strip('"')},
        },
    }
    return json.dumps({"Records": [record]})


def signed_headers(secret: str, body: bytes, timestamp: int, webhook_id: str = "msg_test") -> dict[str, str]:
    key = secret.removeprefix("whsec_").encode()
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v3,{digest}",
    }


def test_repeated_s3_events_and_a_webhook_sent_three_times_make_one_job_and_one_charge(stack: LocalStack) -> None:
    stack.standin.faults.webhook_copies = 3
    stack.api.options.base64_bodies = True  # API Gateway may hand the body over base64-encoded
    submits_before = stack.standin.submit_count
    drop(stack, "repeats", 2.0)
    queue = stack.resource("SubmitQueue")
    for key in ("inbox/repeats/job.json", "inbox/repeats/job.json", "inbox/repeats/audio.wav"):
        stack.sqs.send_message(QueueUrl=queue, MessageBody=s3_event(stack, key))
    job = stack.wait_for("repeats", timeout=60)
    assert job.status is JobStatus.DELIVERED
    for key in ("inbox/repeats/job.json", "inbox/repeats/image.png"):
        stack.sqs.send_message(QueueUrl=queue, MessageBody=s3_event(stack, key))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        deliveries = [d for d in stack.standin.webhook_deliveries if d.task_id == job.task_id]
        if len(deliveries) == 3:
            break
        time.sleep(0.2)
    time.sleep(2)  # let the late S3 events and webhook copies run their course

    assert len(stack.jobs.by_name("repeats")) == 1
    assert stack.standin.submit_count == submits_before + 1
    assert len({d.webhook_id for d in deliveries}) == 1
    assert [d.http_status for d in deliveries] == [200, 200, 200]
    (line,) = ledger_lines(stack, job)
    assert line.charged_micros == expected_charge(2.0, "480p") == job.charged_micros


def test_a_dropped_webhook_is_recovered_by_reconcile_without_a_manual_step(stack: LocalStack) -> None:
    stack.standin.faults.drop_webhook_next = 1
    drop(stack, "no-webhook")
    job = stack.wait_for("no-webhook", timeout=60)
    assert job.status is JobStatus.DELIVERED
    assert not [d for d in stack.standin.webhook_deliveries if d.task_id == job.task_id]
    assert len(ledger_lines(stack, job)) == 1


def test_rate_limits_and_server_errors_on_a_share_of_calls_still_deliver_every_job_once(stack: LocalStack) -> None:
    faults = stack.standin.faults
    faults.seed = 7
    faults.submit_429_rate = 0.4
    faults.submit_500_after_create_rate = 0.3
    faults.result_500_rate = 0.3
    submits_before = stack.standin.submit_count
    names = [f"flaky-{i}" for i in range(8)]
    for name in names:
        drop(stack, name, 1.0)
    jobs = [stack.wait_for(name, timeout=120) for name in names]
    assert [j.status for j in jobs] == [JobStatus.DELIVERED] * len(names), [j.error for j in jobs]
    assert stack.standin.submit_count == submits_before + len(names), "one paid task per job"
    for job in jobs:
        assert [line.charged_micros for line in ledger_lines(stack, job)] == [expected_charge(1.0, "480p")]


def test_forged_and_stale_webhooks_get_401_and_change_nothing(stack: LocalStack) -> None:
    stack.standin.faults.webhook_delay_seconds = 4.0
    drop(stack, "forgery")
    job = stack.wait_for("forgery", statuses={"submitted"}, timeout=30)
    body = json.dumps(
        {
            "id": job.task_id,
            "model": "wavespeed-ai/infinitetalk",
            "status": "completed",
            "outputs": ["http://127.0.0.1:9/x.mp4"],
        }
    ).encode()
    url = f"{stack.webhook_url}?job={job.job_id}"
    secret = stack.standin.webhook_secret
    now = int(time.time())
    attempts = {
        "forged": signed_headers("whsec_not-the-secret", body, now),
        "stale": signed_headers(secret, body, now - 3600),
        "unsigned": {"content-type": "application/json"},
    }
    for label, headers in attempts.items():
        answer = httpx.post(url, content=body, headers=headers, timeout=10)
        assert answer.status_code == 401, label
    # Genuinely signed, but for another task: the unsigned ?job= query cannot point it at this job.
    other = body.replace((job.task_id or "").encode(), b"f" * 32)
    answer = httpx.post(url, content=other, headers=signed_headers(secret, other, now, "msg_other"), timeout=10)
    assert (answer.status_code, answer.json()) == (403, {"error": "not for this job"})
    unchanged = stack.jobs.get(job.job_id)
    assert unchanged is not None and unchanged.status is JobStatus.SUBMITTED
    delivered = stack.wait_for("forgery", timeout=60)
    assert delivered.status is JobStatus.DELIVERED
    assert len(ledger_lines(stack, delivered)) == 1


def test_a_webhook_signed_with_the_wrong_key_is_refused_and_reconcile_delivers_anyway(stack: LocalStack) -> None:
    stack.standin.faults.bad_signature_next = 1
    drop(stack, "bad-signature")
    job = stack.wait_for("bad-signature", timeout=60)
    assert job.status is JobStatus.DELIVERED
    forged = [d for d in stack.standin.webhook_deliveries if d.task_id == job.task_id]
    assert [(d.forged, d.http_status) for d in forged] == [(True, 401)]
    assert len(ledger_lines(stack, job)) == 1
