"""An input deleted between its check and its hand-over to WaveSpeed ends the job with an error file, never a loop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infinitetalk_core.models import FailureKind, JobStatus
from local_stack import LocalStack
from tests.e2e.test_rare_paths import stored_job
from tests.integration.conftest import start_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack({"INPUT_DELIVERY": "wavespeed-upload"}) as running:
        yield running


def test_an_input_deleted_after_its_check_fails_the_job_as_invalid_input_and_sends_nothing(stack: LocalStack) -> None:
    submits_before = stack.standin.submit_count
    job = stored_job(stack, "vanished", JobStatus.RECEIVED, age_seconds=120)
    stack.s3.delete_object(Bucket=stack.bucket, Key="library/vanished/audio.wav")

    ended = stack.wait_for("vanished", timeout=60)

    assert ended.job_id == job.job_id
    assert ended.status is JobStatus.FAILED and ended.failure_kind is FailureKind.INVALID_INPUT, ended.error
    assert ended.reserved_micros == 0, "nothing was sent, so nothing stays held"
    error = stack.read_json("outputs/vanished/error.json")
    assert "deleted after it was checked" in error["problems"][0]
    assert stack.standin.submit_count == submits_before
