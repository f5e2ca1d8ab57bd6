"""`infinitetalk wait`: downloads a delivered job's outputs, explains a refused one, gives up on time."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infinitetalk_cli.main import app
from infinitetalk_core.models import FailureKind, Job, JobStatus, utc_now
from infinitetalk_core.repository import JobRepository
from tests.cli.conftest import BUCKET, Stack
from tests.cli.factories import make_job

runner = CliRunner()


def test_wait_downloads_the_outputs_of_a_delivered_job(stack: Stack, tmp_path: Path) -> None:
    stack.jobs.put_new(
        make_job(
            "anchor",
            JobStatus.DELIVERED,
            output_keys=["outputs/anchor/video.mp4"],
            output_seconds=Decimal("7.36"),
            billed_seconds=8,
            charged_micros=240_000,
        )
    )
    stack.s3.put_object(Bucket=BUCKET, Key="outputs/anchor/video.mp4", Body=b"\x00\x00\x00\x18ftypmp42 video")
    stack.s3.put_object(Bucket=BUCKET, Key="outputs/anchor/result.json", Body=b'{"price_usd": "$0.24"}')
    stack.s3.put_object(Bucket=BUCKET, Key="outputs/anchor/video-2.mp4", Body=b"left over from an older job")
    into = tmp_path / "got"

    result = runner.invoke(app, ["wait", "anchor", "--into", str(into), "--poll", "0.05"])

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in into.iterdir()) == ["result.json", "video.mp4"]
    assert (into / "video.mp4").read_bytes() == b"\x00\x00\x00\x18ftypmp42 video"
    assert str(into / "video.mp4") in result.stdout
    assert str(into / "result.json") in result.stdout
    assert "video 7.36 s" in result.stdout and "charged $0.24" in result.stdout
    assert "delivered" in result.stderr


def test_wait_shows_the_problems_of_a_rejected_job_and_exits_1(stack: Stack, tmp_path: Path) -> None:
    job = make_job("anchor", JobStatus.REJECTED, failure_kind=FailureKind.INVALID_INPUT, error="short")
    stack.jobs.put_new(job)
    error = {
        "job_id": job.job_id,
        "status": "rejected",
        "failure_kind": "invalid_input",
        "problems": ["image.png is named as image but its bytes are plain text", "audio is 700.0 s long"],
        "what_to_do": "Fix the files or options listed in problems and upload the folder again",
    }
    stack.s3.put_object(Bucket=BUCKET, Key="outputs/anchor/error.json", Body=json.dumps(error).encode())

    result = runner.invoke(app, ["wait", "anchor", "--into", str(tmp_path / "got"), "--poll", "0.05"])

    assert result.exit_code == 1, result.output
    assert "rejected (invalid_input)" in result.stderr
    assert "bytes are plain text" in result.stderr
    assert "audio is 700.0 s long" in result.stderr
    assert "what to do: Fix the files" in result.stderr
    assert not (tmp_path / "got").exists()


def test_wait_gives_up_with_exit_3_and_ignores_a_job_older_than_the_newest_drop(stack: Stack) -> None:
    stack.jobs.put_new(make_job("anchor", JobStatus.DELIVERED, at=utc_now() - timedelta(hours=1)))
    stack.s3.put_object(Bucket=BUCKET, Key="inbox/anchor/job.json", Body=b"{}")

    result = runner.invoke(app, ["wait", "anchor", "--timeout", "0.3", "--poll", "0.05"])

    assert result.exit_code == 3, result.output
    assert "not picked up yet" in result.stderr


def test_wait_follows_status_changes_until_the_job_ends(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job("anchor", JobStatus.SUBMITTED)
    stack.jobs.put_new(job)
    calls = 0
    real_by_name = JobRepository.by_name

    def by_name_then_fail(self: JobRepository, name: str) -> list[Job]:
        """The pipeline fails the job while the command is polling."""
        nonlocal calls
        calls += 1
        if calls == 3:
            stack.jobs.transition(job, JobStatus.FAILED, [JobStatus.SUBMITTED], error="WaveSpeed: no face found")
        return real_by_name(self, name)

    monkeypatch.setattr(JobRepository, "by_name", by_name_then_fail)
    result = runner.invoke(app, ["wait", "anchor", "--into", str(tmp_path), "--poll", "0.05"])

    assert result.exit_code == 1, result.output
    assert result.stderr.index("submitted") < result.stderr.index("failed")
    assert "WaveSpeed: no face found" in result.stderr
