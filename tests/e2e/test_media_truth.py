"""A few formats end to end: what the stand-in decodes on its own is what the job was estimated at, what
the delivered video plays and what the ledger charges; the truncated MP3 and the picture bomb that
once cost money are refused for nothing, with their inputs untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from infinitetalk_core.models import FailureKind, JobStatus
from local_stack import LocalStack
from tests.e2e.helpers import expected_charge, ledger_lines, snapshot, video_seconds
from tests.integration.conftest import start_stack
from tests.media_corpus import corpus, encode_audio, good_audio, good_images, good_videos, png_declaring

pytestmark = pytest.mark.e2e

MANIFEST_FOLDER = "library/Médiathèque de Zoë/prise n°2"


@dataclass(frozen=True)
class Drop:
    name: str
    files: dict[str, bytes]
    manifest: bool = False

    @property
    def inputs_prefix(self) -> str:
        return f"{MANIFEST_FOLDER}/" if self.manifest else f"inbox/{self.name}/"


def six_seconds_m4a() -> bytes:
    return encode_audio("ipod", "aac", 44_100, seconds=6.0, container_options={"movflags": "faststart"})


def good_drops() -> list[Drop]:
    audio, images, videos = good_audio(), good_images(), good_videos()
    return [
        # Exactly 6 s of AAC decodes to 6.02 s (whole frames); the MP4 says 6 s, so 6 s are charged, not 7.
        Drop("m4a-and-webp", {"image.webp": images["image.webp"], "audio.m4a": six_seconds_m4a()}),
        Drop("mp3-and-gif", {"image.gif": images["image.gif"], "audio.mp3": audio["audio.mp3"]}),
        Drop("opus-by-manifest", {"image.jpeg": images["image.jpeg"], "audio.opus": audio["audio.opus"]}, True),
        Drop("mov-and-flac", {"video.mov": videos["video.mov"], "audio.flac": audio["audio.flac"]}),
    ]


def bad_drops() -> dict[str, tuple[Drop, str]]:
    samples = {sample.case: sample for sample in corpus()}
    portrait = good_images()["image.png"]
    return {
        "cut-mp3": (
            Drop("cut-mp3", {"image.png": portrait, "audio.mp3": samples["mp3-cut-to-1kb"].data}),
            "audio.mp3 claims to play 3.70 s but its bytes play only 0.08 s: the file is truncated or damaged",
        ),
        "picture-bomb": (
            Drop("picture-bomb", {"image.png": png_declaring(12_000, 12_000), "audio.wav": good_audio()["audio.wav"]}),
            "image.png is 12000x12000 px; pictures may be at most 8192 px on each side",
        ),
    }


GOOD = good_drops()
BAD = bad_drops()
AT_DROP: dict[str, dict[str, str]] = {}


def drop(stack: LocalStack, item: Drop) -> None:
    if not item.manifest:
        stack.drop_folder(item.name, item.files, {})
        return
    inputs = {}
    for filename, body in item.files.items():
        key = f"{MANIFEST_FOLDER}/voix de Zoë - {filename}"
        stack.put(key, body)
        inputs[filename.rsplit(".", 1)[0]] = key
    stack.put(f"inbox/{item.name}.json", json.dumps({"inputs": inputs}, ensure_ascii=False).encode())


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with start_stack() as running:
        for item in [*GOOD, *(bad for bad, _ in BAD.values())]:
            drop(running, item)
            AT_DROP[item.name] = snapshot(running, item.inputs_prefix)
        yield running


@pytest.mark.parametrize("item", GOOD, ids=[item.name for item in GOOD])
def test_the_estimate_the_video_and_the_charge_are_the_stand_ins_own_decoded_length(
    stack: LocalStack, item: Drop
) -> None:
    job = stack.wait_for(item.name, timeout=120)
    assert job.status is JobStatus.DELIVERED, job.error
    assert job.task_id is not None and job.input_seconds is not None
    rendered = stack.standin.tasks[job.task_id].output_seconds
    assert rendered is not None
    assert abs(float(job.input_seconds) - rendered) < 1e-6, "estimated from exactly what the stand-in decodes"

    played = video_seconds(stack, f"outputs/{item.name}/video.mp4")
    assert abs(played - rendered) < 1e-4, "the video plays what the stand-in rendered"
    (line,) = ledger_lines(stack, job)
    assert line.output_seconds is not None and abs(float(line.output_seconds) - rendered) < 1e-4
    assert line.charged_micros == expected_charge(rendered, "480p") == line.estimate_micros
    if item.name == "m4a-and-webp":
        assert line.billed_seconds == 6 and rendered == 6.0
    assert snapshot(stack, item.inputs_prefix) == AT_DROP[item.name]


@pytest.mark.parametrize("name", sorted(BAD))
def test_the_inputs_that_once_cost_money_are_refused_for_nothing(stack: LocalStack, name: str) -> None:
    item, expected = BAD[name]
    job = stack.wait_for(item.name, timeout=60)
    assert job.status is JobStatus.REJECTED and job.failure_kind is FailureKind.INVALID_INPUT
    error = stack.read_json(f"outputs/{item.name}/error.json")
    assert any(expected in problem for problem in error["problems"]), error["problems"]
    assert error["inputs_untouched"] is True
    assert ledger_lines(stack, job) == [] and job.task_id is None
    sent = [json.dumps(task.input) for task in stack.standin.tasks.values()]
    assert not any(f"/{item.name}/" in body for body in sent), "nothing of this drop reached WaveSpeed"
    assert snapshot(stack, item.inputs_prefix) == AT_DROP[item.name]
