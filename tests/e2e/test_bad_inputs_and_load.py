"""Bad drops get an error file a person can act on and cost nothing; a burst of fifty drops all arrive."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from infinitetalk_core.models import FailureKind, JobStatus
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.e2e.helpers import expected_charge, ledger_lines, snapshot
from tests.integration.conftest import start_stack

pytestmark = pytest.mark.e2e

EMPTY = b""
BAD_DROPS: dict[str, tuple[dict[str, bytes], dict[str, object] | None, str]] = {
    "text-as-png": (
        {"image.png": b"this is a note, not a picture\n", "audio.wav": voice_wav(1.0)},
        {},
        "image.png is named as image but its bytes are plain text",
    ),
    "empty-audio": ({"image.png": portrait_png(), "audio.wav": EMPTY}, {}, "audio.wav is empty (0 bytes)"),
    "eleven-minutes": (
        {"image.png": portrait_png(), "audio.wav": voice_wav(660.0)},
        {},
        "audio is 660.0 s long; the limit is 600 s (10 minutes) per job",
    ),
    "turns-too-long": (
        {"image.png": portrait_png(people=2), "left_audio.wav": voice_wav(400.0), "right_audio.wav": voice_wav(300.0)},
        {"order": "left_right"},
        "left 400.0 s + right 300.0 s = 700.0 s; the limit is 600 s",
    ),
    "unreadable-audio": (
        {"image.png": portrait_png(), "audio.wav": b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200))},
        {},
        "audio.wav has no playable sound",
    ),
    "stray-file": (
        {"image.png": portrait_png(), "audio.wav": voice_wav(1.0), "notes.txt": b"remember to smile"},
        {},
        "notes.txt: unexpected file",
    ),
    "missing-audio": ({"image.png": portrait_png()}, None, "missing audio (a file named audio with one of"),
    "bad-option": (
        {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)},
        {"resolution": "4k", "speed": 2},
        "unknown option 'speed'",
    ),
    "order-for-one": (
        {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)},
        {"order": "left_right"},
        "order applies only to two speakers",
    ),
}
BURST = 50


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack(parameters={"MonthlyBudgetUsd": "0"}) as running:
        yield running


@pytest.mark.parametrize("name", sorted(BAD_DROPS))
def test_a_bad_drop_gets_an_error_file_keeps_its_inputs_and_costs_nothing(stack: LocalStack, name: str) -> None:
    files, options, expected = BAD_DROPS[name]
    submits_before = stack.standin.submit_count
    stack.drop_folder(name, files, options)
    dropped = snapshot(stack, f"inbox/{name}/")
    job = stack.wait_for(name, timeout=60)

    assert job.status is JobStatus.REJECTED and job.failure_kind is FailureKind.INVALID_INPUT
    error = stack.read_json(f"outputs/{name}/error.json")
    assert error["status"] == "rejected" and error["inputs_untouched"] is True
    assert any(expected in problem for problem in error["problems"]), error["problems"]
    assert "upload" in error["what_to_do"]
    assert snapshot(stack, f"inbox/{name}/") == dropped
    assert stack.output_keys(name) == [f"outputs/{name}/error.json"]
    assert stack.standin.submit_count == submits_before
    assert ledger_lines(stack, job) == []


def test_a_fixed_drop_under_the_same_name_is_a_new_job_and_clears_the_error(stack: LocalStack) -> None:
    stack.drop_folder("fix-me", {"image.png": b"not an image", "audio.wav": voice_wav(1.0)}, {})
    rejected = stack.wait_for("fix-me", timeout=60)
    assert rejected.status is JobStatus.REJECTED
    stack.drop_folder("fix-me", {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)}, {})
    delivered = stack.wait_for("fix-me", statuses={"delivered"}, timeout=60)
    assert delivered.job_id != rejected.job_id
    assert len(stack.jobs.by_name("fix-me")) == 2
    assert "outputs/fix-me/error.json" not in stack.output_keys("fix-me")


def test_a_folder_completed_after_its_missing_file_error_starts_and_clears_the_error(stack: LocalStack) -> None:
    stack.drop_folder("late-audio", {"image.png": portrait_png()})
    rejected = stack.wait_for("late-audio", timeout=60)
    assert rejected.status is JobStatus.REJECTED
    assert "outputs/late-audio/error.json" in stack.output_keys("late-audio")
    stack.drop_folder("late-audio", {"audio.wav": voice_wav(1.0)})
    delivered = stack.wait_for("late-audio", statuses={"delivered"}, timeout=60)
    assert delivered.job_id != rejected.job_id
    assert stack.output_keys("late-audio") == ["outputs/late-audio/result.json", "outputs/late-audio/video.mp4"]


def test_a_recording_still_uploading_past_the_settle_time_holds_the_folder_back(stack: LocalStack) -> None:
    """A large file on a slow link: its multipart upload outlasts the settle time, and no error is written."""
    audio = voice_wav(2.0)
    upload = stack.s3.create_multipart_upload(Bucket=stack.bucket, Key="inbox/slow-link/audio.wav")
    stack.drop_folder("slow-link", {"image.png": portrait_png()})
    time.sleep(5)  # well past the settle time of this stack (3 s)
    assert stack.newest_job("slow-link") is None
    assert stack.output_keys("slow-link") == []
    part = stack.s3.upload_part(
        Bucket=stack.bucket, Key="inbox/slow-link/audio.wav", UploadId=upload["UploadId"], PartNumber=1, Body=audio
    )
    stack.s3.complete_multipart_upload(
        Bucket=stack.bucket,
        Key="inbox/slow-link/audio.wav",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    job = stack.wait_for("slow-link", timeout=60)
    assert job.status is JobStatus.DELIVERED
    assert len(stack.jobs.by_name("slow-link")) == 1


def test_fifty_jobs_dropped_at_once_are_all_delivered_and_the_ledger_adds_up(stack: LocalStack) -> None:
    names = [f"burst-{index:02d}" for index in range(BURST)]
    image = portrait_png(width=256, height=256)
    for index, name in enumerate(names):
        seconds = 0.5 + (index % 7) * 0.9
        options = {"resolution": "720p"} if index % 3 == 0 else {}
        stack.drop_folder(name, {"image.png": image, "audio.wav": voice_wav(seconds)}, options)
    jobs = [stack.wait_for(name, timeout=600) for name in names]
    assert [job.status for job in jobs].count(JobStatus.DELIVERED) == BURST

    month = jobs[0].month
    totals, entries = stack.jobs.month(month)
    burst_lines = [line for line in entries if line.job_name.startswith("burst-")]
    assert len(burst_lines) == BURST
    for line in burst_lines:
        assert line.output_seconds is not None
        assert line.charged_micros == expected_charge(line.output_seconds, line.resolution.value)
    overall = next(total for total in totals if total.model is None)
    assert overall.charged_micros == sum(line.charged_micros for line in entries)
    assert overall.reserved_micros == 0
    per_model = [total for total in totals if total.model is not None]
    assert sum(total.charged_micros for total in per_model) == overall.charged_micros
    assert sum(total.jobs for total in per_model) == len(entries)
    assert stack.dead_letters() == {"SubmitDeadLetterQueue": 0, "FetchDeadLetterQueue": 0}
