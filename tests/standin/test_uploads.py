"""The three upload paths real clients use, over HTTP: binary, ``/upload`` with its limits, the SDK's ticket."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.standin.conftest import portrait_png, tone_wav, wait_final
from wavespeed_standin import WaveSpeedStandin

MiB = 1024 * 1024
SINGLE = "/wavespeed-ai/infinitetalk"


@pytest.mark.parametrize(
    ("filename", "content_type", "kind"),
    [
        ("face.png", "image/png", "image"),
        ("face.JPEG", "application/octet-stream", "image"),
        ("clip.mov", "video/quicktime", "video"),
        ("voice.wav", "audio/wav", "audio"),
        ("voice.webm", "audio/webm", "audio"),
        ("clip.webm", "video/webm", "video"),
        ("voice", "audio/mpeg", "audio"),
    ],
)
def test_a_binary_upload_answers_its_type_and_a_url_that_serves_the_bytes(
    api: httpx.Client, filename: str, content_type: str, kind: str
) -> None:
    content = os.urandom(2048)
    answer = api.post("/media/upload/binary", files={"file": (filename, content, content_type)})
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert (data["type"], data["filename"], data["size"]) == (kind, filename, len(content))
    assert httpx.get(data["download_url"], trust_env=False).content == content


@pytest.mark.parametrize("path", ["/media/upload/binary", "/upload"])
@pytest.mark.parametrize(("filename", "content_type"), [("notes.txt", "text/plain"), ("blob", "application/pdf")])
def test_a_format_wavespeed_does_not_take_is_refused_with_400(
    api: httpx.Client, path: str, filename: str, content_type: str
) -> None:
    answer = api.post(path, files={"file": (filename, b"hello", content_type)})
    assert answer.status_code == 400
    assert "unsupported file format" in answer.json()["message"]


def test_upload_answers_a_url_and_holds_each_kind_to_its_documented_limit(api: httpx.Client) -> None:
    image = os.urandom(1024)
    answer = api.post("/upload", files={"file": ("face.png", image, "image/png")})
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert set(data) == {"url"}
    assert httpx.get(data["url"], trust_env=False).content == image

    at_limit = bytes(20 * MiB)
    assert api.post("/upload", files={"file": ("big.png", at_limit, "image/png")}).status_code == 200
    too_big = api.post("/upload", files={"file": ("big.png", at_limit + b"x", "image/png")})
    assert too_big.status_code == 413
    assert "20 MB" in too_big.json()["message"]
    # The limit is per kind: the same size is fine for audio (50 MB).
    assert api.post("/upload", files={"file": ("long.wav", at_limit + b"x", "audio/wav")}).status_code == 200


def test_an_sdk_ticket_is_a_put_url_and_a_download_url_that_serves_the_bytes_once_put(
    standin: WaveSpeedStandin, api: httpx.Client
) -> None:
    answer = api.post("/media/uploads", json={"filename": "face.png", "content_type": "image/png"})
    assert answer.status_code == 200, answer.text
    ticket = answer.json()["data"]
    assert ticket["method"] == "PUT" and ticket["type"] == "image"
    assert ticket["upload_url"].startswith(f"{standin.root_url}/upload-targets/")
    assert httpx.get(ticket["download_url"], trust_env=False).status_code == 404, "nothing there before the PUT"

    content = portrait_png(64, 80)
    forged = ticket["upload_url"].rsplit("token=", 1)[0] + "token=forged"
    assert httpx.put(forged, content=content, trust_env=False).status_code == 403
    assert httpx.get(ticket["download_url"], trust_env=False).status_code == 404, "a forged PUT stores nothing"
    assert httpx.put(ticket["upload_url"], content=content, trust_env=False).status_code == 200
    fetched = httpx.get(ticket["download_url"], trust_env=False)
    assert (fetched.status_code, fetched.content) == (200, content)


@pytest.mark.parametrize(
    ("body", "message"),
    [({}, "filename"), ({"filename": ""}, "filename"), ({"filename": "a.exe"}, "unsupported"), ([1], "filename")],
)
def test_a_ticket_for_no_file_or_a_format_not_taken_is_refused(api: httpx.Client, body: object, message: str) -> None:
    answer = api.post("/media/uploads", json=body)
    assert answer.status_code == 400
    assert message in answer.json()["message"]


def test_media_from_the_ticket_and_from_upload_feed_a_job_that_completes(api: httpx.Client) -> None:
    ticket = api.post("/media/uploads", json={"filename": "face.png"}).json()["data"]
    assert httpx.put(ticket["upload_url"], content=portrait_png(64, 80), trust_env=False).status_code == 200
    audio = api.post("/upload", files={"file": ("voice.wav", tone_wav(0.5), "audio/wav")}).json()["data"]["url"]
    task_id = api.post(SINGLE, json={"image": ticket["download_url"], "audio": audio}).json()["data"]["id"]
    finished = wait_final(api, task_id)
    assert finished["status"] == "completed", finished["error"]
