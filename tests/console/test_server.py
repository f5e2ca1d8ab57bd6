"""The console's server as an attacker and a careless user meet it: hostile text, other sites, bad drops."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from pathlib import Path

import pytest

from infinitetalk_core.billing import Charge
from infinitetalk_core.models import FailureKind, JobStatus, LedgerEntry, ModelName, Resolution, usd_text, utc_now
from tests.cli.conftest import BUCKET, write_png, write_wav
from tests.cli.factories import make_job
from tests.console.conftest import BUDGET_MICROS, Served

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def hostile_job(served: Served) -> str:
    job = make_job(
        "x",
        JobStatus.REJECTED,
        job_id=f"{HOSTILE}-0123456789ab",
        job_name=HOSTILE,
        failure_kind=FailureKind.INVALID_INPUT,
        error=f"<img src=x onerror=alert(2)> {HOSTILE}",
    )
    served.jobs.put_new(job)
    error = {"job_id": job.job_id, "problems": [HOSTILE, "a & b"], "what_to_do": f"rename {HOSTILE}"}
    served.s3.put_object(Bucket=BUCKET, Key=f"outputs/{HOSTILE}/error.json", Body=json.dumps(error).encode())
    return job.job_id


@pytest.mark.parametrize("page", ["/jobs", "/jobs/rows", "/jobs/{id}", "/names/{name}", "/jobs?name={name}"])
def test_hostile_names_and_errors_are_text_in_every_page(served: Served, page: str) -> None:
    job_id = hostile_job(served)
    path = page.format(id=served.console.templates.filters["path"](job_id), name="%3Cscript%3E")

    answer = served.http.get(path)

    assert answer.status_code == 200, answer.text
    assert "<script>alert" not in answer.text and "<img src=x" not in answer.text
    assert ESCAPED in answer.text or "&lt;script&gt;" in answer.text


def test_the_job_page_lists_the_error_files_problems_and_what_to_do(served: Served) -> None:
    job_id = hostile_job(served)
    answer = served.http.get("/jobs/" + served.console.templates.filters["path"](job_id))
    problems = re.findall(r"<li>(.*?)</li>", answer.text.split('class="problems"')[1].split("</ul>")[0])
    assert problems == [ESCAPED, "a &amp; b"]
    assert f"rename {ESCAPED}" in answer.text


def test_pages_forbid_inline_script_and_allow_media_only_from_the_bucket(served: Served) -> None:
    answer = served.http.get("/jobs")
    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert re.search(r"media-src https://[^ ;]*amazonaws\.com;", policy), policy
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Cache-Control"] == "no-store"
    assert '<script src="/static/console.js"' in answer.text and "<script>" not in answer.text


def test_a_request_for_another_host_is_refused(served: Served) -> None:
    answer = served.http.get("/jobs", headers={"Host": "attacker.example:80"})
    assert answer.status_code == 421


@pytest.mark.parametrize("case", ["no token", "wrong token", "another site"])
def test_changes_from_anywhere_but_the_consoles_own_page_are_refused(served: Served, case: str) -> None:
    headers = {
        "no token": {"Origin": served.url},
        "wrong token": {"Origin": served.url, "X-Console-Token": "guess"},
        "another site": {"Origin": "https://attacker.example", "X-Console-Token": served.console.token},
    }[case]
    before = served.keys()
    answer = served.http.post("/api/drops", headers=headers)
    assert answer.status_code == 403
    assert served.keys() == before
    assert served.http.post("/api/drops", headers={**headers, "Origin": served.url}).status_code == (
        201 if case == "another site" else 403
    )


def test_static_files_are_only_the_consoles_own(served: Served) -> None:
    assert served.http.get("/static/console.js").status_code == 200
    for path in ("/static/..%2Fserver.py", "/static/server.py", "/static/%2e%2e%2fapp.py"):
        assert served.http.get(path).status_code == 404, path


def test_filters_that_mean_nothing_are_named_not_obeyed(served: Served) -> None:
    served.jobs.put_new(make_job("anchor", JobStatus.DELIVERED))
    answer = served.http.get("/jobs?status=exploded&month=2026-13")
    assert "status &#39;exploded&#39; is not one of" in answer.text
    assert "anchor-0123456789ab" in answer.text
    assert "anchor" not in served.http.get("/jobs/rows?status=failed").text


def stage(served: Served, drop_id: str, role: str, path: Path) -> int:
    answer = served.call(
        "PUT", f"/api/drops/{drop_id}/files/{role}", params={"filename": path.name}, content=path.read_bytes()
    )
    return answer.status_code


def test_a_drop_the_pipeline_would_refuse_is_refused_whole_and_nothing_reaches_the_bucket(
    served: Served, tmp_path: Path
) -> None:
    served.s3.put_object(Bucket=BUCKET, Key="inbox/anchor/video.mp4", Body=b"left over")
    before = served.keys()
    note = tmp_path / "portrait.png"
    note.write_text("just words")
    long_voice = write_wav(tmp_path / "voice.wav", 601.0, rate=1_000)
    drop_id = served.call("POST", "/api/drops").json()["drop_id"]
    assert stage(served, drop_id, "image", note) == 200
    assert stage(served, drop_id, "audio", long_voice) == 200
    assert stage(served, drop_id, "narrator", long_voice) == 400

    answer = served.call("POST", f"/api/drops/{drop_id}/submit", json={"name": "anchor", "seed": "-7"})

    assert answer.status_code == 422
    problems = answer.json()["problems"]
    assert any(p.startswith("seed:") for p in problems), problems
    assert any("image: portrait.png is named as image but its bytes are plain text" in p for p in problems)
    assert served.keys() == before
    assert served.call("POST", f"/api/drops/{drop_id}/submit", json={}).status_code == 404, "a refused drop is gone"

    again = served.call("POST", "/api/drops").json()["drop_id"]
    stage(served, again, "image", write_png(tmp_path / "face.png"))
    stage(served, again, "audio", write_wav(tmp_path / "short.wav", 2.0))
    leftover = served.call("POST", f"/api/drops/{again}/submit", json={"name": "anchor"})
    assert leftover.status_code == 422
    assert "already holds video.mp4" in leftover.json()["problems"][0]
    assert served.keys() == before


def test_an_accepted_drop_uploads_every_file_then_job_json_and_reports_its_progress(
    served: Served, tmp_path: Path
) -> None:
    drop_id = served.call("POST", "/api/drops").json()["drop_id"]
    assert stage(served, drop_id, "image", write_png(tmp_path / "My Portrait.PNG")) == 200
    assert stage(served, drop_id, "audio", write_wav(tmp_path / "voice.wav", 2.5)) == 200

    answer = served.call(
        "POST", f"/api/drops/{drop_id}/submit", json={"name": "", "resolution": "720p", "prompt": HOSTILE}
    )

    assert answer.status_code == 202, answer.text
    plan = answer.json()
    assert plan["name"].startswith("My-Portrait-")
    deadline = time.monotonic() + 10
    while (state := served.http.get(f"/api/drops/{drop_id}").json())["state"] == "uploading":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert state["state"] == "done"
    assert [f["label"] for f in state["files"]] == ["audio.wav", "image.png", "job.json"]
    assert all(f["sent"] == f["size"] > 0 for f in state["files"])
    folder = f"inbox/{plan['name']}/"
    stored = served.s3.list_objects_v2(Bucket=BUCKET, Prefix=folder)["Contents"]
    times = {item["Key"].removeprefix(folder): item["LastModified"] for item in stored}
    assert sorted(times) == ["audio.wav", "image.png", "job.json"]
    assert times["job.json"] == max(times.values())
    options = json.loads(served.s3.get_object(Bucket=BUCKET, Key=folder + "job.json")["Body"].read())
    assert options == {"prompt": HOSTILE, "resolution": "720p"}
    assert plan["waiting_url"] == f"/names/{plan['name']}"
    assert served.call("PUT", f"/api/drops/{drop_id}/files/image", content=b"x").status_code == 409


def test_the_waiting_page_becomes_the_jobs_page_once_the_newest_drop_is_a_job(served: Served) -> None:
    served.s3.put_object(Bucket=BUCKET, Key="inbox/anchor/job.json", Body=b"{}")
    waiting = served.http.get("/names/anchor")
    assert waiting.status_code == 200 and 'id="wait-name"' in waiting.text
    assert served.http.get("/api/names/anchor").json() == {"job_id": None, "url": None}

    served.jobs.put_new(make_job("anchor", JobStatus.SUBMITTED, at=utc_now()))

    assert served.http.get("/api/names/anchor").json()["url"] == "/jobs/anchor-0123456789ab"
    moved = served.http.get("/names/anchor")
    assert moved.status_code == 303 and moved.headers["Location"] == "/jobs/anchor-0123456789ab"
    assert served.http.get("/api/jobs/anchor-0123456789ab").json()["status"] == "submitted"
    assert served.http.get("/api/jobs/nobody").status_code == 404


def settle(served: Served, name: str, micros: int, model: ModelName, resolution: Resolution) -> None:
    job = make_job(name, JobStatus.REPORTED, reserved_micros=micros, estimate_micros=micros, task_id=f"t-{name}")
    served.jobs.create_with_reservation(job, budget_micros=0)
    charge = Charge(rule_set=job.rule_set, billed_seconds=5, rate_micros_per_second=30_000, micros=micros + 10)
    line = LedgerEntry(
        job_id=job.job_id,
        job_name=name,
        month=job.month,
        model=model,
        resolution=resolution,
        outcome="delivered",
        rule_set=job.rule_set,
        input_seconds=Decimal("4.2"),
        output_seconds=Decimal("4.2"),
        billed_seconds=5,
        rate_micros_per_second=30_000,
        estimate_micros=micros,
        charged_micros=micros + 10,
        task_id=f"t-{name}",
        recorded_at=utc_now(),
    )
    served.jobs.settle(job, JobStatus.DELIVERED, [JobStatus.REPORTED], line, charge, reserved_micros=0)


def test_the_money_page_adds_up_to_the_ledger_and_shows_the_estimate_against_the_charge(served: Served) -> None:
    settle(served, "one", 150_000, ModelName.SINGLE, Resolution.P480)
    settle(served, "two", 300_000, ModelName.MULTI, Resolution.P720)
    month = utc_now().strftime("%Y-%m")
    totals, _ = served.jobs.month(month)
    overall = next(t for t in totals if t.model is None)

    page = served.http.get(f"/money?month={month}").text

    segments = [int(m) for m in re.findall(r'class="segment"[^>]*data-micros="(\d+)"', page)]
    assert sum(segments) == overall.charged_micros == 450_020
    assert f'id="total-charged">{usd_text(overall.charged_micros)}<' in page
    assert f'id="budget">{usd_text(BUDGET_MICROS)}<' in page
    assert page.count('class="money over">+$0.00001<') == 2, "each charge is 10 micro-dollars over its estimate"
    assert served.http.get("/money?month=2026-13").status_code == 400


def test_a_console_that_cannot_reach_aws_says_so_readably(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import EndpointConnectionError

    def unreachable(*args: object, **kwargs: object) -> None:
        raise EndpointConnectionError(endpoint_url="https://dynamodb.example")

    monkeypatch.setattr(served.console.reader.jobs, "recent", unreachable)
    answer = served.http.get("/jobs")
    assert answer.status_code == 502
    assert "could not be reached" in answer.text or "Could not connect" in answer.text
