"""Jobs run end to end: real inputs in, a real signed webhook and a real H.264/AAC MP4 out."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.standin.conftest import (
    SECRET,
    FileServer,
    Receiver,
    mp4_seconds,
    mp4_tracks,
    pattern_mp4,
    portrait_png,
    tone_wav,
    wait_final,
)
from wavespeed_standin import WaveSpeedStandin

WEBHOOK_FIELDS = [
    "id",
    "model",
    "input",
    "outputs",
    "urls",
    "has_nsfw_contents",
    "status",
    "created_at",
    "error",
    "timings",
]


def test_a_single_speaker_job_completes_with_a_signed_webhook_and_a_real_video(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer, receiver: Receiver, standin_log: list[str]
) -> None:
    before = standin.submit_count
    body = {
        "image": files.add("portrait.png", "image/png", portrait_png(320, 400)),
        "audio": files.add("voice.wav", "audio/wav", tone_wav(1.5)),
        "prompt": "a person talking",
        "seed": 42,
    }
    answer = api.post("/wavespeed-ai/infinitetalk", json=body, params={"webhook": receiver.url("job-1")})
    assert answer.status_code == 200
    envelope = answer.json()
    assert (envelope["code"], envelope["message"]) == (200, "success")
    created = envelope["data"]
    task_id = created["id"]
    assert len(task_id) == 32 and int(task_id, 16) >= 0
    assert created["model"] == "wavespeed-ai/infinitetalk"
    assert created["status"] == "created"
    assert created["outputs"] == [] and created["has_nsfw_contents"] == [] and created["error"] == ""
    assert created["urls"] == {"get": f"{standin.base_url}/predictions/{task_id}/result"}
    assert created["timings"] == {"inference": 0}
    assert abs(datetime.fromisoformat(created["created_at"]) - datetime.now(UTC)).total_seconds() < 30
    assert standin.submit_count == before + 1

    [delivery] = receiver.wait_for(1)
    assert delivery.path == "/hooks/wavespeed?job=job-1"
    webhook_id = delivery.headers["webhook-id"]
    timestamp = delivery.headers["webhook-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    key = SECRET.removeprefix("whsec_").encode()
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + delivery.body, hashlib.sha256).hexdigest()
    assert delivery.headers["webhook-signature"] == f"v3,{digest}"

    payload = json.loads(delivery.body)
    assert list(payload) == WEBHOOK_FIELDS
    assert payload["id"] == task_id
    assert payload["input"] == body
    assert payload["status"] == "completed"
    assert payload["outputs"] == [f"{standin.root_url}/outputs/{task_id}/video.mp4"]
    assert payload["has_nsfw_contents"] == [False]
    assert payload["error"] == ""
    assert payload["timings"]["inference"] >= 100, "min_processing_seconds is 0.1"
    result = api.get(f"/predictions/{task_id}/result").json()["data"]
    assert result == {k: v for k, v in payload.items() if k != "input"}

    download = httpx.get(payload["outputs"][0], trust_env=False)
    assert download.status_code == 200
    assert download.headers["content-type"] == "video/mp4"
    assert int(download.headers["content-length"]) == len(download.content)
    assert mp4_seconds(download.content) == pytest.approx(1.5, abs=0.1)
    tracks = mp4_tracks(download.content)
    assert tracks["vide"] == ("avc1", 192, 240), "H.264, scaled to 240 px high with the portrait's aspect"
    assert tracks["soun"][0] == "mp4a"

    task = standin.tasks[task_id]
    assert task.output_seconds == pytest.approx(1.5)
    assert task.webhook_url == receiver.url("job-1")
    assert standin.wait_idle(10)
    [sent] = [d for d in standin.webhook_deliveries if d.task_id == task_id]
    assert (sent.webhook_id, sent.status, sent.http_status, sent.forged) == (webhook_id, "completed", 200, False)
    assert any(task_id in line and "submit" in line for line in standin_log)
    assert any(task_id in line and "200" in line for line in standin_log)


def test_output_length_is_exact_for_whole_seconds(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer
) -> None:
    """The pipeline bills whole seconds rounded up: 3.0 s must not read back as 3.02 s."""
    body = {
        "image": files.add("p.png", "image/png", portrait_png()),
        "audio": files.add("v.wav", "audio/wav", tone_wav(3.0, rate=16000)),
    }
    task_id = api.post("/wavespeed-ai/infinitetalk", json=body).json()["data"]["id"]
    done = wait_final(api, task_id)
    assert done["status"] == "completed", done["error"]
    video = httpx.get(done["outputs"][0], trust_env=False).content
    assert mp4_seconds(video) == pytest.approx(3.0, abs=0.001)


@pytest.mark.parametrize(("order", "seconds"), [("meanwhile", 1.5), ("left_right", 2.5), ("right_left", 2.5)])
def test_two_speakers_are_mixed_or_played_in_turn(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer, order: str, seconds: float
) -> None:
    body = {
        "image": files.add("two.png", "image/png", portrait_png(480, 270)),
        "left_audio": files.add("left.wav", "audio/wav", tone_wav(1.0, frequency=200)),
        "right_audio": files.add("right.wav", "audio/wav", tone_wav(1.5, rate=16000, frequency=330)),
        "order": order,
    }
    task_id = api.post("/wavespeed-ai/infinitetalk/multi", json=body).json()["data"]["id"]
    done = wait_final(api, task_id)
    assert done["status"] == "completed", done["error"]
    assert standin.tasks[task_id].output_seconds == pytest.approx(seconds)
    video = httpx.get(done["outputs"][0], trust_env=False).content
    assert mp4_seconds(video) == pytest.approx(seconds, abs=0.1)
    assert mp4_tracks(video)["vide"][0] == "avc1"


def test_video_to_video_loops_the_clip_for_the_whole_audio(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer
) -> None:
    body = {
        "video": files.add("clip.mp4", "video/mp4", pattern_mp4(1.0)),
        "audio": files.add("voice.wav", "audio/wav", tone_wav(2.2)),
    }
    task_id = api.post("/wavespeed-ai/infinitetalk/video-to-video", json=body).json()["data"]["id"]
    done = wait_final(api, task_id)
    assert done["status"] == "completed", done["error"]
    video = httpx.get(done["outputs"][0], trust_env=False).content
    assert mp4_seconds(video) == pytest.approx(2.2, abs=0.1)
    assert mp4_tracks(video)["vide"] == ("avc1", 320, 240)


def test_a_queue_of_jobs_all_finish(standin: WaveSpeedStandin, api: httpx.Client, files: FileServer) -> None:
    image = files.add("p.png", "image/png", portrait_png(64, 64))
    ids = [
        api.post(
            "/wavespeed-ai/infinitetalk",
            json={"image": image, "audio": files.add(f"a{n}.wav", "audio/wav", tone_wav(0.4 + n / 10))},
        ).json()["data"]["id"]
        for n in range(12)
    ]
    assert standin.wait_idle(60)
    for n, task_id in enumerate(ids):
        task = standin.tasks[task_id]
        assert task.status == "completed", task.error
        assert task.output_seconds == pytest.approx(0.4 + n / 10)


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("missing", None, "HTTP 404"),
        ("noise.wav", b"definitely not audio" * 20, "could not be read as audio"),
    ],
)
def test_an_unusable_input_fails_the_task_readably(
    api: httpx.Client, files: FileServer, name: str, content: bytes | None, error: str
) -> None:
    audio = files.add(name, "audio/wav", content) if content else files.missing(name)
    body = {"image": files.add("p.png", "image/png", portrait_png()), "audio": audio}
    done = wait_final(api, api.post("/wavespeed-ai/infinitetalk", json=body).json()["data"]["id"])
    assert done["status"] == "failed"
    assert error in done["error"]
    assert "audio" in done["error"]
    assert done["outputs"] == []


def test_an_image_that_is_not_an_image_fails_the_task(api: httpx.Client, files: FileServer) -> None:
    body = {
        "image": files.add("p.png", "image/png", b"GIF89a nonsense"),
        "audio": files.add("a.wav", "audio/wav", tone_wav(0.5)),
    }
    done = wait_final(api, api.post("/wavespeed-ai/infinitetalk", json=body).json()["data"]["id"])
    assert done["status"] == "failed"
    assert "image could not be read as an image" in done["error"]


def test_an_input_away_from_loopback_is_refused_without_connecting(api: httpx.Client, files: FileServer) -> None:
    started = time.monotonic()
    body = {"image": "http://192.0.2.1/x.png", "audio": files.add("a.wav", "audio/wav", tone_wav(0.5))}
    done = wait_final(api, api.post("/wavespeed-ai/infinitetalk", json=body).json()["data"]["id"], timeout=10)
    # 192.0.2.1 is a documentation address: a real connection attempt would hang until a time-out.
    assert time.monotonic() - started < 5
    assert done["status"] == "failed"
    assert "192.0.2.1" in done["error"] and "loopback" in done["error"]
