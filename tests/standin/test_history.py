"""The prediction history over HTTP: its body rules, filters, paging, 7-day window, lag and faults."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.standin.conftest import FileServer, portrait_png, tone_wav, wait_final
from wavespeed_standin import WaveSpeedStandin

SINGLE = "wavespeed-ai/infinitetalk"
MULTI = "wavespeed-ai/infinitetalk/multi"
CLOSED = "http://127.0.0.1:9"
DOCUMENTED_FIELDS = {
    "id",
    "model",
    "outputs",
    "urls",
    "has_nsfw_contents",
    "status",
    "created_at",
    "error",
    "executionTime",
    "timings",
}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def quick_task(api: httpx.Client, model: str = SINGLE) -> str:
    """A task that fails at once (its inputs point at a closed port): created, listed, final in moments."""
    body: dict[str, object] = {"image": f"{CLOSED}/p.png", "audio": f"{CLOSED}/a.wav"}
    if model == MULTI:
        body = {"image": f"{CLOSED}/p.png", "left_audio": f"{CLOSED}/l.wav", "right_audio": f"{CLOSED}/r.wav"}
    answer = api.post(f"/{model}", json=body)
    assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["data"]["id"]
    return task_id


def history(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/predictions", json=body)


def items(api: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    answer = history(api, **body)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]["items"]
    return found


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"page_size": 10}, "page"),
        ({"page": 1}, "page_size"),
        ({"page": 0, "page_size": 10}, "page"),
        ({"page": "1", "page_size": 10}, "page"),
        ({"page": True, "page_size": 10}, "page"),
        ({"page": 1, "page_size": 0}, "page_size"),
        ({"page": 1, "page_size": 101}, "page_size"),
        ({"page": 1, "page_size": 2.5}, "page_size"),
        ({"page": 1, "page_size": 10, "status": "created"}, "status"),
        ({"page": 1, "page_size": 10, "created_after": "yesterday"}, "created_after"),
        ({"page": 1, "page_size": 10, "created_before": 1700000000}, "created_before"),
        ({"page": 1, "page_size": 10, "model": ["a"]}, "model"),
    ],
)
def test_a_history_body_that_breaks_a_documented_rule_is_refused_naming_the_field(
    api: httpx.Client, body: dict[str, object], field: str
) -> None:
    answer = history(api, **body)
    assert answer.status_code == 400
    assert answer.json()["code"] == 400 and field in answer.json()["message"]


def test_the_history_needs_the_key_and_a_json_object(standin: WaveSpeedStandin, api: httpx.Client) -> None:
    anonymous = httpx.post(f"{standin.base_url}/predictions", json={"page": 1, "page_size": 1}, trust_env=False)
    assert anonymous.status_code == 401
    for content in (b"", b"[1]", b"{not json"):
        answer = api.post("/predictions", content=content, headers={"content-type": "application/json"})
        assert answer.status_code == 400


def test_the_history_lists_tasks_newest_first_in_the_documented_shape_with_filters_and_pages(
    api: httpx.Client,
) -> None:
    start = datetime.now(UTC) - timedelta(milliseconds=5)
    singles = []
    for _ in range(3):
        singles.append(quick_task(api))
        time.sleep(0.01)  # distinct creation times, so "newest first" is a fact to check
    multi = quick_task(api, MULTI)
    for task_id in [*singles, multi]:
        assert wait_final(api, task_id)["status"] == "failed"

    first = history(api, page=1, page_size=2, model=SINGLE, created_after=iso(start))
    assert first.status_code == 200
    data = first.json()["data"]
    assert set(data) == {"page", "total", "items"}
    assert (data["page"], data["total"]) == (1, 3)
    second = items(api, page=2, page_size=2, model=SINGLE, created_after=iso(start))
    listed = [item["id"] for item in data["items"] + second]
    assert listed == list(reversed(singles)), "newest first, across pages"
    assert items(api, page=3, page_size=2, model=SINGLE, created_after=iso(start)) == []
    for item in data["items"]:
        assert set(item) == DOCUMENTED_FIELDS, "no input in a history item"
        assert item["model"] == SINGLE and item["status"] == "failed"
        assert item["urls"]["get"].endswith(f"/predictions/{item['id']}/result")

    everything = [i["id"] for i in items(api, page=1, page_size=100, created_after=iso(start))]
    assert everything == [multi, *reversed(singles)]
    assert [i["id"] for i in items(api, page=1, page_size=100, model=MULTI, created_after=iso(start))] == [multi]
    assert len(items(api, page=1, page_size=100, status="failed", created_after=iso(start))) == 4
    assert items(api, page=1, page_size=100, status="completed", created_after=iso(start)) == []
    assert items(api, page=1, page_size=100, status="processing", created_after=iso(start)) == []

    created = {i["id"]: datetime.fromisoformat(i["created_at"].replace("Z", "+00:00")) for i in data["items"] + second}
    between = created[singles[0]] + (created[singles[1]] - created[singles[0]]) / 2
    before = items(api, page=1, page_size=100, model=SINGLE, created_after=iso(start), created_before=iso(between))
    assert [i["id"] for i in before] == [singles[0]]
    naive = iso(between).removesuffix("Z")  # no zone given: read as UTC
    assert [i["id"] for i in items(api, page=1, page_size=100, model=SINGLE, created_after=naive)] == list(
        reversed(singles[1:])
    )


def test_a_running_task_is_listed_as_processing(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer
) -> None:
    start = datetime.now(UTC) - timedelta(milliseconds=5)
    standin.faults.seconds_per_output_second = 4.0
    body = {
        "image": files.add("p.png", "image/png", portrait_png(64, 80)),
        "audio": files.add("a.wav", "audio/wav", tone_wav(0.5)),
    }
    task_id = api.post(f"/{SINGLE}", json=body).json()["data"]["id"]
    running = items(api, page=1, page_size=10, status="processing", created_after=iso(start))
    assert [i["id"] for i in running] == [task_id]
    assert running[0]["status"] in ("created", "processing")
    assert wait_final(api, task_id)["status"] == "completed"
    assert items(api, page=1, page_size=10, status="processing", created_after=iso(start)) == []
    [done] = items(api, page=1, page_size=10, status="completed", created_after=iso(start))
    assert done["id"] == task_id and done["outputs"] and done["executionTime"] > 0


def test_the_history_covers_the_past_seven_days_only(standin: WaveSpeedStandin, api: httpx.Client) -> None:
    start = datetime.now(UTC) - timedelta(milliseconds=5)
    recent, old = quick_task(api), quick_task(api)
    for task_id in (recent, old):
        wait_final(api, task_id)
    # Six days and 23 hours old: still listed. Past seven days: gone from the history, and its
    # result with it (WaveSpeed deletes predictions after seven days).
    standin.tasks[old].created_at = datetime.now(UTC) - timedelta(days=6, hours=23)
    listed = items(api, page=1, page_size=100, created_after=iso(start - timedelta(days=8)))
    assert {recent, old} <= {i["id"] for i in listed}
    standin.tasks[old].created_at = datetime.now(UTC) - timedelta(days=7, minutes=1)
    listed = items(api, page=1, page_size=100, created_after=iso(start - timedelta(days=8)))
    assert recent in {i["id"] for i in listed} and old not in {i["id"] for i in listed}
    assert api.get(f"/predictions/{old}/result").status_code == 404
    assert api.get(f"/predictions/{recent}/result").status_code == 200


def test_a_new_task_appears_only_after_the_history_lag(standin: WaveSpeedStandin, api: httpx.Client) -> None:
    start = datetime.now(UTC) - timedelta(milliseconds=5)
    standin.faults.history_lag_seconds = 0.6
    task_id = quick_task(api)
    assert items(api, page=1, page_size=10, created_after=iso(start)) == []
    time.sleep(0.7)
    assert [i["id"] for i in items(api, page=1, page_size=10, created_after=iso(start))] == [task_id]
    wait_final(api, task_id)


def test_history_faults_break_a_whole_read_or_a_later_page(standin: WaveSpeedStandin, api: httpx.Client) -> None:
    start = datetime.now(UTC) - timedelta(milliseconds=5)
    for task_id in (quick_task(api), quick_task(api)):
        wait_final(api, task_id)
    standin.faults.history_500_next = 1
    assert history(api, page=1, page_size=1, created_after=iso(start)).status_code == 500
    assert history(api, page=1, page_size=1, created_after=iso(start)).status_code == 200
    standin.faults.history_500_from_page = 2
    assert history(api, page=1, page_size=1, created_after=iso(start)).status_code == 200
    broken = history(api, page=2, page_size=1, created_after=iso(start))
    assert broken.status_code == 500 and "data" not in broken.json()
    standin.faults.history_500_from_page = 0
    assert history(api, page=2, page_size=1, created_after=iso(start)).json()["data"]["total"] == 2
