"""A deploy whose API key is still the placeholder: jobs wait, nothing reaches WaveSpeed, setup lets them go on."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infinitetalk_cli.main import app
from infinitetalk_core.credentials import PLACEHOLDER_SECRET
from infinitetalk_core.models import JobStatus, utc_now
from infinitetalk_core.pipeline import FolderCheck, Pipeline, ResumeJob, get_pipeline
from infinitetalk_core.reconciliation import reconcile
from infinitetalk_core.submit_states import API_KEY_WAIT
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.integration.conftest import start_stack, wait_until

pytestmark = pytest.mark.integration
runner = CliRunner()
STALL_SECONDS = 2


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # Secrets read afresh on every use, and a received job counts as stalled after 2 s, so the
    # reconcile sweep (every second here) would re-queue a waiting job many times over if it did so.
    with start_stack({"SECRET_MAX_AGE_SECONDS": "0", "SUBMIT_STALL_SECONDS": str(STALL_SECONDS)}) as running:
        yield running


class RecordingQueues:
    """Queues that only remember what a sweep would have sent."""

    def __init__(self) -> None:
        self.submits: list[FolderCheck | ResumeJob] = []
        self.fetches: list[str] = []

    def send_submit(self, message: FolderCheck | ResumeJob, delay_seconds: int = 0) -> None:
        self.submits.append(message)

    def send_fetch(self, job_id: str) -> None:
        self.fetches.append(job_id)


def sweep_later(recorder: RecordingQueues) -> dict[str, int]:
    """One reconcile sweep as it would run ten minutes from now, with its messages recorded, not sent."""
    later = utc_now() + timedelta(minutes=10)
    pipeline: Pipeline = dataclasses.replace(get_pipeline(), queues=recorder, clock=lambda: later)  # type: ignore[arg-type]
    return reconcile(pipeline)


def cli(stack: LocalStack, *arguments: str) -> list[str]:
    return ["--endpoint-url", stack.endpoint_url, "--region", "us-east-1", *arguments]


def test_a_job_waits_for_the_api_key_without_calling_wavespeed_and_goes_on_once_setup_stores_it(
    stack: LocalStack, tmp_path: Path
) -> None:
    standin = stack.standin
    real_key = standin.api_key
    api_key_secret = stack.resource("WaveSpeedApiKeySecret")
    stack.aws.secrets.put_secret_value(SecretId=api_key_secret, SecretString=PLACEHOLDER_SECRET)
    asked: list[bool] = []
    authorized = standin.authorized

    def counting(header: str | None) -> bool:
        asked.append(True)
        return authorized(header)

    standin.authorized = counting  # type: ignore[method-assign]
    try:
        stack.drop_folder("keyless", {"image.png": portrait_png(), "audio.wav": voice_wav(3.0)}, {})
        waiting = stack.wait_for("keyless", statuses={"received"}, timeout=30)
        wait_until(lambda: (stack.newest_job("keyless") or waiting).error == API_KEY_WAIT, timeout=30)
        marked = stack.newest_job("keyless")
        assert marked is not None

        # Long past the stall time a sweep counts the waiting job (the alarm's metric) but sends nothing.
        recorder = RecordingQueues()
        assert sweep_later(recorder) == {"waiting_for_api_key": 1}
        assert recorder.submits == []
        # And the stack's own sweeps, every second, leave it waiting: not failed, not sent.
        time.sleep(STALL_SECONDS + 3)
        still = stack.jobs.get(marked.job_id)
        assert still is not None
        assert still.status is JobStatus.RECEIVED
        assert still.error == API_KEY_WAIT
        assert still.submit_attempts == 0
        assert asked == [], "nothing may reach WaveSpeed while the key is a placeholder"
        assert standin.submit_count == 0
        assert stack.output_keys("keyless") == []

        status = runner.invoke(
            app,
            cli(
                stack,
                "--bucket",
                stack.bucket,
                "--jobs-table",
                stack.jobs_table,
                "--ledger-table",
                stack.ledger_table,
                "status",
                "keyless",
            ),
        )
        assert status.exit_code == 0, status.output
        assert API_KEY_WAIT in status.stdout

        key_file = tmp_path / "wavespeed.key"
        key_file.write_text(real_key + "\n")
        setup = runner.invoke(
            app,
            cli(
                stack,
                "setup",
                "--api-key-secret-id",
                api_key_secret,
                "--webhook-secret-id",
                stack.resource("WaveSpeedWebhookSecret"),
                "--wavespeed-url",
                standin.base_url,
                "--api-key-file",
                str(key_file),
            ),
            env={"WAVESPEED_API_KEY": None},
        )
        assert setup.exit_code == 0, setup.output
        assert real_key not in setup.output

        # The stack's next sweep sends the waiting job back to submit, which now finds the key.
        delivered = stack.wait_for("keyless", statuses={"delivered"}, timeout=60)
    finally:
        standin.authorized = authorized  # type: ignore[method-assign]
        stack.aws.secrets.put_secret_value(SecretId=api_key_secret, SecretString=real_key)
    assert delivered.job_id == marked.job_id
    assert delivered.error is None
    assert standin.submit_count == 1
    assert "outputs/keyless/video.mp4" in stack.output_keys("keyless")
