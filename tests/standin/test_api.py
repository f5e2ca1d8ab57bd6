"""The stand-in's REST surface: auth, validation, the envelope, media storage, lifecycle."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.standin.conftest import API_KEY, SECRET, FileServer, portrait_png, tone_wav, wait_final
from wavespeed_standin import WaveSpeedStandin

SINGLE = "/wavespeed-ai/infinitetalk"
MULTI = "/wavespeed-ai/infinitetalk/multi"
VIDEO = "/wavespeed-ai/infinitetalk/video-to-video"
IMG = "http://127.0.0.1:9/image.png"
WAV = "http://127.0.0.1:9/audio.wav"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", SINGLE),
        ("GET", "/predictions/abc/result"),
        ("GET", "/webhook/secret"),
        ("POST", "/media/upload/binary"),
        ("POST", "/upload"),
        ("POST", "/media/uploads"),
        ("POST", "/predictions"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", API_KEY])
def test_every_api_call_needs_the_bearer_key(
    standin: WaveSpeedStandin, method: str, path: str, authorization: str | None
) -> None:
    before = standin.submit_count
    headers = {"Authorization": authorization} if authorization else {}
    answer = httpx.request(
        method, standin.base_url + path, headers=headers, json={"image": IMG, "audio": WAV}, trust_env=False
    )
    assert answer.status_code == 401
    assert answer.json() == {"code": 401, "message": "Unauthorized"}
    assert standin.submit_count == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (SINGLE, {"image": IMG}, "audio"),
        (SINGLE, {"audio": WAV}, "image"),
        (SINGLE, {"image": "not a url", "audio": WAV}, "image"),
        (SINGLE, {"image": IMG, "audio": WAV, "resolution": "1080p"}, "resolution"),
        (SINGLE, {"image": IMG, "audio": WAV, "seed": 2_147_483_648}, "seed"),
        (SINGLE, {"image": IMG, "audio": WAV, "seed": -2}, "seed"),
        (SINGLE, {"image": IMG, "audio": WAV, "seed": True}, "seed"),
        (SINGLE, {"image": IMG, "audio": WAV, "prompt": 5}, "prompt"),
        (MULTI, {"image": IMG, "left_audio": WAV}, "right_audio"),
        (MULTI, {"image": IMG, "left_audio": WAV, "right_audio": WAV, "order": "both"}, "order"),
        (VIDEO, {"audio": WAV}, "video"),
        (VIDEO, {"video": IMG, "audio": WAV, "mask_image": 7}, "mask_image"),
    ],
)
def test_a_bad_body_is_refused_with_the_field_named_and_nothing_created(
    standin: WaveSpeedStandin, api: httpx.Client, path: str, body: dict[str, object], field: str
) -> None:
    before = standin.submit_count
    answer = api.post(path, json=body)
    assert answer.status_code == 400
    assert answer.json()["code"] == 400
    assert field in answer.json()["message"]
    assert standin.submit_count == before


def test_a_body_that_is_not_a_json_object_is_refused(standin: WaveSpeedStandin, api: httpx.Client) -> None:
    before = standin.submit_count
    for content in (b"{not json", b"[1, 2]"):
        answer = api.post(SINGLE, content=content, headers={"content-type": "application/json"})
        assert answer.status_code == 400
    assert standin.submit_count == before


def test_valid_optional_fields_are_accepted(standin: WaveSpeedStandin, api: httpx.Client) -> None:
    before = standin.submit_count
    body = {"image": IMG, "left_audio": WAV, "right_audio": WAV, "order": "right_left", "seed": 2_147_483_647}
    answer = api.post(MULTI, json={**body, "resolution": "720p", "prompt": "two people talk"})
    assert answer.status_code == 200
    assert standin.submit_count == before + 1
    # The inputs point at a closed port: the task fails readably instead of hanging.
    failed = wait_final(api, answer.json()["data"]["id"])
    assert failed["status"] == "failed"
    assert "could not be downloaded" in failed["error"]


def test_unknown_models_and_predictions_are_404(api: httpx.Client) -> None:
    assert api.post("/wavespeed-ai/infinitetalk/triple", json={"image": IMG}).status_code == 404
    missing = api.get("/predictions/0123456789abcdef/result")
    assert missing.status_code == 404
    assert missing.json()["code"] == 404


def test_the_webhook_secret_is_served(api: httpx.Client) -> None:
    answer = api.get("/webhook/secret")
    assert answer.status_code == 200
    assert answer.json() == {"code": 200, "message": "success", "data": {"secret": SECRET}}


def test_uploaded_media_comes_back_byte_for_byte_and_can_feed_a_job(
    standin: WaveSpeedStandin, api: httpx.Client
) -> None:
    tricky = b"--boundary\r\n\r\n" + os.urandom(4096) + b"\r\n--\r\n"
    answer = api.post("/media/upload/binary", files={"file": ("../odd name.png", tricky, "application/octet-stream")})
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert (data["size"], data["type"]) == (len(tricky), "image")
    assert "/" not in data["filename"] and " " not in data["filename"]
    assert data["download_url"].startswith(f"{standin.root_url}/media/")
    fetched = httpx.get(data["download_url"], trust_env=False)
    assert fetched.status_code == 200
    assert fetched.content == tricky

    image = api.post("/media/upload/binary", files={"file": ("face.png", portrait_png(), "image/png")})
    audio = api.post("/media/upload/binary", files={"file": ("voice.wav", tone_wav(0.6), "audio/wav")})
    job = api.post(
        SINGLE,
        json={"image": image.json()["data"]["download_url"], "audio": audio.json()["data"]["download_url"]},
    )
    finished = wait_final(api, job.json()["data"]["id"])
    assert finished["status"] == "completed", finished["error"]


def test_an_upload_without_a_file_field_is_refused(api: httpx.Client) -> None:
    answer = api.post("/media/upload/binary", files={"other": ("a.txt", b"x", "text/plain")})
    assert answer.status_code == 400
    assert "file" in answer.json()["message"]


def test_an_unknown_media_or_output_is_404(standin: WaveSpeedStandin) -> None:
    assert httpx.get(f"{standin.root_url}/media/{'0' * 32}/x.png", trust_env=False).status_code == 404
    assert httpx.get(standin.output_url("nope"), trust_env=False).status_code == 404


def test_it_listens_on_loopback_only_and_stops_cleanly(files: FileServer) -> None:
    with pytest.raises(ValueError, match="loopback"):
        WaveSpeedStandin(host="0.0.0.0")  # noqa: S104 - the point of the test
    lines: list[str] = []
    with WaveSpeedStandin(log=lines.append) as local:
        url = local.base_url
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/v3")
        headers = {"Authorization": "Bearer local-standin-api-key"}
        assert httpx.get(f"{url}/webhook/secret", headers=headers, trust_env=False).json()["data"] == {
            "secret": "whsec_local-standin-secret"
        }
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/webhook/secret", headers=headers, trust_env=False)
    assert any("listening" in line for line in lines)
    assert any("stopped" in line for line in lines)
