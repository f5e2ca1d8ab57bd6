"""404 and 405 as the real API answers them, the processing-time knob, and deletion after the retention time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.standin.conftest import API_KEY, FileServer, portrait_png, tone_wav, wait_final
from wavespeed_standin import WaveSpeedStandin

SINGLE = "wavespeed-ai/infinitetalk"
TASK = "0123456789abcdef0123456789abcdef"


def job_body(files: FileServer, seconds: float = 0.5) -> dict[str, object]:
    return {
        "image": files.add("p.png", "image/png", portrait_png(64, 80)),
        "audio": files.add("a.wav", "audio/wav", tone_wav(seconds)),
    }


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/v3/predictions", "POST"),
        ("DELETE", "/api/v3/predictions", "POST"),
        ("POST", f"/api/v3/predictions/{TASK}/result", "GET"),
        ("GET", f"/api/v3/{SINGLE}", "POST"),
        ("PUT", f"/api/v3/{SINGLE}", "POST"),
        ("PATCH", f"/api/v3/{SINGLE}/multi", "POST"),
        ("POST", "/api/v3/webhook/secret", "GET"),
        ("GET", "/api/v3/media/upload/binary", "POST"),
        ("DELETE", "/api/v3/upload", "POST"),
        ("GET", "/api/v3/media/uploads", "POST"),
        ("POST", f"/outputs/{TASK}/video.mp4", "GET"),
        ("GET", f"/upload-targets/{TASK}", "PUT"),
    ],
)
def test_a_known_path_asked_with_another_method_answers_405_and_creates_nothing(
    standin: WaveSpeedStandin, method: str, path: str, allowed: str
) -> None:
    before = standin.submit_count
    answer = httpx.request(
        method,
        standin.root_url + path,
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"image": "http://127.0.0.1:9/p.png", "audio": "http://127.0.0.1:9/a.wav"},
        trust_env=False,
    )
    assert answer.status_code == 405
    assert answer.headers["allow"] == allowed
    assert answer.json()["code"] == 405
    assert standin.submit_count == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v3/nothing-here"),
        ("POST", "/api/v3/wavespeed-ai/infinitetalk/triple"),
        ("POST", "/api/v3/predictions/list"),
        ("GET", f"/api/v3/predictions/{TASK}"),
        ("DELETE", f"/api/v3/predictions/{TASK}/result/extra"),
        ("GET", "/api/v2/predictions"),
        ("PUT", "/somewhere/else"),
        ("GET", "/"),
    ],
)
@pytest.mark.parametrize("authorization", [None, f"Bearer {API_KEY}"])
def test_an_unknown_path_answers_404_with_or_without_the_key(
    standin: WaveSpeedStandin, method: str, path: str, authorization: str | None
) -> None:
    before = standin.submit_count
    headers = {"Authorization": authorization} if authorization else {}
    answer = httpx.request(method, standin.root_url + path, headers=headers, json={}, trust_env=False)
    assert answer.status_code == 404
    assert answer.json() == {"code": 404, "message": f"not found: {path}"}
    assert standin.submit_count == before


def test_processing_takes_the_set_time_per_second_of_output(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer
) -> None:
    started = time.monotonic()
    quick = api.post(f"/{SINGLE}", json=job_body(files)).json()["data"]["id"]
    wait_final(api, quick)
    quick_seconds = time.monotonic() - started

    standin.faults.seconds_per_output_second = 7.0  # 0.5 s of output -> 3.5 s of processing
    started = time.monotonic()
    paced = api.post(f"/{SINGLE}", json=job_body(files)).json()["data"]["id"]
    standin.faults.seconds_per_output_second = None  # taken when the task was made, not when it finishes
    assert api.get(f"/predictions/{paced}/result").json()["data"]["status"] in ("created", "processing")
    assert wait_final(api, paced, timeout=20)["status"] == "completed"
    paced_seconds = time.monotonic() - started
    assert paced_seconds >= 3.4
    assert quick_seconds < 3.0, "without the knob a task is not held back"


def test_results_outputs_history_and_uploads_are_deleted_after_the_retention_time(files: FileServer) -> None:
    with WaveSpeedStandin(api_key=API_KEY, min_processing_seconds=0.05) as local:
        local.faults.retention_seconds = 1.5
        with httpx.Client(
            base_url=local.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False, timeout=30
        ) as api:
            made = datetime.now(UTC) - timedelta(seconds=1)
            upload = api.post("/upload", files={"file": ("face.png", portrait_png(64, 80), "image/png")})
            media_url = upload.json()["data"]["url"]
            task_id = api.post(f"/{SINGLE}", json=job_body(files)).json()["data"]["id"]
            done = wait_final(api, task_id)
            assert done["status"] == "completed"
            history = {"page": 1, "page_size": 10, "created_after": made.isoformat()}
            assert [i["id"] for i in api.post("/predictions", json=history).json()["data"]["items"]] == [task_id]
            assert httpx.get(done["outputs"][0], trust_env=False).status_code == 200
            assert httpx.get(media_url, trust_env=False).status_code == 200

            deadline = time.monotonic() + 10
            while api.get(f"/predictions/{task_id}/result").status_code == 200:
                assert time.monotonic() < deadline, "the result outlived the retention time"
                time.sleep(0.1)
            gone = api.get(f"/predictions/{task_id}/result")
            assert gone.status_code == 404 and gone.json()["code"] == 404
            assert httpx.get(done["outputs"][0], trust_env=False).status_code == 404
            assert httpx.get(media_url, trust_env=False).status_code == 404
            assert api.post("/predictions", json=history).json()["data"] == {"page": 1, "total": 0, "items": []}
            assert task_id not in local.tasks
            assert local.submit_count == 1, "deleting is not un-billing"
