"""Each model, each way of dropping, both resolutions: from files in the bucket to a playable, charged video."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from infinitetalk_core.models import JobStatus
from local_stack import LocalStack
from local_stack.samples import portrait_mp4, portrait_png, voice_wav
from tests.e2e.helpers import expected_charge, ledger_lines, snapshot, video_codecs, video_seconds
from tests.integration.conftest import start_stack

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Case:
    name: str
    mode: str  # "folder" or "manifest"
    files: dict[str, bytes]  # role file name -> bytes
    options: dict[str, Any]
    expected_model: str
    expected_seconds: float


def cases() -> list[Case]:
    duo = portrait_png(people=2, width=640, height=360)
    return [
        Case(
            "single-folder",
            "folder",
            {"image.png": portrait_png(), "audio.wav": voice_wav(3.4)},
            {},
            "infinitetalk",
            3.4,
        ),
        Case(
            "single-manifest-720",
            "manifest",
            {
                "image.jpg": portrait_png(image_format="JPEG"),
                "audio.wav": voice_wav(6.2),
                "mask_image.png": portrait_png(),
            },
            {"resolution": "720p", "prompt": "a presenter", "seed": 1234},
            "infinitetalk",
            6.2,
        ),
        Case(
            "multi-folder-720",
            "folder",
            {"image.png": duo, "left_audio.wav": voice_wav(2.0, 200), "right_audio.wav": voice_wav(3.1, 100)},
            {"resolution": "720p"},
            "infinitetalk/multi",
            3.1,
        ),
        Case(
            "multi-manifest-turns",
            "manifest",
            {"image.png": duo, "left_audio.wav": voice_wav(2.4, 200), "right_audio.wav": voice_wav(3.3, 100)},
            {"order": "right_left"},
            "infinitetalk/multi",
            5.7,
        ),
        Case(
            "v2v-folder",
            "folder",
            {"video.mp4": portrait_mp4(1.5), "audio.wav": voice_wav(4.0)},
            {},
            "infinitetalk/video-to-video",
            4.0,
        ),
        Case(
            "v2v-manifest-720",
            "manifest",
            {"video.mp4": portrait_mp4(1.0), "audio.wav": voice_wav(2.2), "mask_image.png": portrait_png()},
            {"resolution": "720p"},
            "infinitetalk/video-to-video",
            2.2,
        ),
    ]


CASES = cases()
INPUTS_AT_DROP: dict[str, dict[str, str]] = {}


def inputs_prefix(case: Case) -> str:
    return f"library/{case.name}/" if case.mode == "manifest" else f"inbox/{case.name}/"


def drop(stack: LocalStack, case: Case) -> None:
    if case.mode == "folder":
        stack.drop_folder(case.name, case.files, case.options)
        return
    inputs = {}
    for filename, body in case.files.items():
        key = f"library/{case.name}/{filename}"
        stack.put(key, body)
        inputs[filename.rsplit(".", 1)[0]] = key
    stack.put(f"inbox/{case.name}.json", json.dumps({"inputs": inputs, **case.options}).encode())


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack() as running:
        for case in CASES:
            drop(running, case)
            INPUTS_AT_DROP[case.name] = snapshot(running, inputs_prefix(case))
        yield running


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_drop_becomes_a_playable_video_charged_for_its_measured_length(stack: LocalStack, case: Case) -> None:
    job = stack.wait_for(case.name, timeout=120)
    assert job.status is JobStatus.DELIVERED, job.error
    assert job.spec is not None and job.spec.model.value == f"wavespeed-ai/{case.expected_model}"

    video = f"outputs/{case.name}/video.mp4"
    assert stack.output_keys(case.name) == [f"outputs/{case.name}/result.json", video]
    measured = video_seconds(stack, video)
    assert measured == pytest.approx(case.expected_seconds, abs=0.15)
    assert video_codecs(stack, video) == {"avc1", "mp4a"}

    resolution = case.options.get("resolution", "480p")
    (line,) = ledger_lines(stack, job)
    assert line.outcome == "delivered"
    assert line.output_seconds is not None and float(line.output_seconds) == pytest.approx(measured, abs=0.01)
    assert line.charged_micros == expected_charge(line.output_seconds, resolution)
    assert line.rule_set == "seeds-output-5s"

    result = stack.read_json(f"outputs/{case.name}/result.json")
    assert result["job_id"] == job.job_id and result["task_id"] == job.task_id
    assert result["model"] == f"wavespeed-ai/{case.expected_model}"
    assert result["options"]["resolution"] == resolution
    assert result["billed_seconds"] == line.billed_seconds
    assert result["nsfw_flags"] == [False]
    submitted = stack.standin.tasks[job.task_id or ""]
    assert submitted.input.get("seed", -1) == case.options.get("seed", -1)
    assert snapshot(stack, inputs_prefix(case)) == INPUTS_AT_DROP[case.name]
