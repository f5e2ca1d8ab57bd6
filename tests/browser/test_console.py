"""The console as a person uses it, in a real headless Chromium against the local stack.

A drop made through the page becomes a delivered, playing video; the list follows the pipeline
without a reload and shows a hostile name as text; an error file reads as a list of problems;
the form refuses what the pipeline would, before a byte reaches the bucket; the chart's totals
are the ledger's, to the micro-dollar.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest

from infinitetalk_core.budget_alerts import BudgetAlertStore
from infinitetalk_core.models import FailureKind, Job, JobStatus, usd_text, utc_now
from local_stack import LocalStack
from local_stack.samples import portrait_png, voice_wav
from tests.browser.conftest import screenshot
from tests.e2e.helpers import snapshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser
HOSTILE = "<script>alert(1)</script>"
FOLDER_NAME = HOSTILE.split("/", 1)[0]


def console(stack: LocalStack, path: str) -> str:
    return stack.console_url + path


def test_a_drop_made_in_the_page_reaches_delivered_and_its_video_plays(
    stack: LocalStack, page: Page, tmp_path: Path
) -> None:
    image = tmp_path / "portrait.png"
    image.write_bytes(portrait_png())
    voice = voice_wav(3.2)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if re.search(r"/api/drops/[0-9a-f]+$", r.url) else None)

    page.goto(console(stack, "/drop"))
    page.set_input_files("input[name=image]", str(image))
    # The audio is dragged onto its box, as from a file manager.
    dragged = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "voice.wav", { type: "audio/wav" }));
            return data;
        }""",
        base64.b64encode(voice).decode(),
    )
    page.dispatch_event(".dropzone[data-role=audio]", "drop", {"dataTransfer": dragged})
    assert "voice.wav" in page.inner_text(".dropzone[data-role=audio] .chosen")
    page.fill("input[name=name]", "browser-drop")
    page.fill("textarea[name=prompt]", "a calm presenter")
    page.click("#drop-submit")

    page.wait_for_url(re.compile(r"/jobs/browser-drop-[0-9a-f]{12}$"), timeout=60_000)
    page.wait_for_selector("video.output-video", timeout=90_000)
    job = stack.wait_for("browser-drop", timeout=5)
    assert job.status is JobStatus.DELIVERED
    assert page.inner_text("h1").startswith("browser-drop")
    assert "delivered" in page.inner_text(".timeline")

    played = page.evaluate(
        """async () => {
            const video = document.querySelector("video.output-video");
            video.muted = true;
            await video.play();
            const start = video.currentTime;
            await new Promise((resolve) => setTimeout(resolve, 1500));
            return { start, now: video.currentTime, duration: video.duration, error: video.error && video.error.code };
        }"""
    )
    assert played["error"] is None
    assert played["now"] - played["start"] > 0.5, played
    assert abs(played["duration"] - 3.2) < 0.3, played
    assert page.evaluate("document.querySelector('.input-image img').naturalWidth") == 512
    assert page.locator(".input-audio audio").count() == 1
    screenshot(page, "job-delivered")

    # The page followed the upload's progress; every object reached the bucket whole and job.json went last.
    assert len(polls) >= 1 and len(set(polls)) == 1
    final: dict[str, Any] = httpx.get(polls[-1], timeout=5).json()
    assert final["state"] == "done"
    assert [f["label"] for f in final["files"]] == ["audio.wav", "image.png", "job.json"]
    assert all(f["sent"] == f["size"] for f in final["files"])
    listed = stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="inbox/browser-drop/")["Contents"]
    stored = {item["Key"]: item["LastModified"] for item in listed}
    assert sorted(stored) == [f"inbox/browser-drop/{name}" for name in ("audio.wav", "image.png", "job.json")]
    assert all(stored["inbox/browser-drop/job.json"] >= moment for moment in stored.values())
    assert json.loads(stack.s3.get_object(Bucket=stack.bucket, Key="inbox/browser-drop/job.json")["Body"].read()) == {
        "prompt": "a calm presenter",
        "resolution": "480p",
    }


def test_the_list_updates_without_a_reload_and_shows_hostile_text_as_text(stack: LocalStack, page: Page) -> None:
    page.goto(console(stack, "/jobs"))
    page.evaluate("window.sameDocument = true")
    rows = page.locator("#job-rows")

    stack.drop_folder("live-one", {"image.png": portrait_png(), "audio.wav": voice_wav(2.0)}, {"prompt": HOSTILE})
    # A folder cannot hold a slash in its name: this drop's name is what comes before it.
    stack.drop_folder(HOSTILE, {"image.png": portrait_png(), "audio.wav": voice_wav(1.0)}, {})
    # A row named exactly so, as another tool could write one.
    stack.jobs.put_new(
        Job(
            job_id=f"{HOSTILE}-000000000000",
            job_name=HOSTILE,
            status=JobStatus.REJECTED,
            status_since=utc_now(),
            created_at=utc_now(),
            failure_kind=FailureKind.INVALID_INPUT,
            error=f"<img src=x onerror=alert(2)> {HOSTILE}",
        )
    )

    rows.locator("tr", has_text="live-one").locator(".status-delivered").wait_for(timeout=60_000)
    rows.locator("tr", has_text=FOLDER_NAME).locator(".status-rejected").wait_for(timeout=30_000)
    rows.locator("tr", has_text=HOSTILE).first.wait_for(timeout=10_000)
    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"
    assert page.evaluate("document.querySelectorAll('#job-rows script, #job-rows img').length") == 0
    text = rows.inner_text()
    assert HOSTILE in text and FOLDER_NAME in text and "<img src=x onerror=alert(2)>" in text
    screenshot(page, "jobs-live")

    page.locator("#job-rows tr", has_text="live-one").locator("a").click()
    page.wait_for_selector(".spec")
    assert f"prompt “{HOSTILE}”" in page.inner_text(".spec")
    assert page.evaluate("document.querySelectorAll('main script, main img:not(.input-image img)').length") == 0


def test_an_error_file_is_shown_as_problems_and_what_to_do(stack: LocalStack, page: Page) -> None:
    job = stack.wait_for(FOLDER_NAME, ["rejected"], timeout=30)
    page.goto(console(stack, "/jobs"))
    page.locator("#job-rows tr", has_text=job.job_id).locator("a").click()
    page.wait_for_selector(".error-report")

    problems = page.locator(".error-report .problems li").all_inner_texts()
    error = stack.read_json(f"outputs/{FOLDER_NAME}/error.json")
    assert problems == error["problems"]
    assert any(f"job name {FOLDER_NAME!r} is not usable" in p for p in problems)
    assert error["what_to_do"] in page.inner_text(".what-to-do")
    assert "invalid_input" in page.inner_text(".error-report h2")
    assert page.inner_text("h1").startswith(FOLDER_NAME)
    assert page.url.endswith("/jobs/" + quote(job.job_id, safe=""))
    assert page.evaluate("document.querySelectorAll('main script').length") == 0
    screenshot(page, "job-error")


def test_the_form_refuses_what_the_pipeline_would_and_uploads_nothing(
    stack: LocalStack, page: Page, tmp_path: Path
) -> None:
    not_an_image = tmp_path / "portrait.png"
    not_an_image.write_text("this is a note, not a picture")
    before = snapshot(stack, "")

    page.goto(console(stack, "/drop"))
    page.set_input_files("input[name=image]", str(not_an_image))
    page.fill("input[name=seed]", "twelve")
    page.click("#drop-submit")
    page.wait_for_selector("#drop-problems:not([hidden])")

    problems = page.locator("#drop-problems li").all_inner_texts()
    assert any("portrait.png is named as image but its bytes are plain text" in p for p in problems), problems
    assert any(p.startswith("infinitetalk needs audio") for p in problems), problems
    assert any(p.startswith("seed:") for p in problems), problems
    assert not any("--" in p for p in problems), "problems name the form's fields, not command-line flags"
    assert page.is_enabled("#drop-submit")
    assert snapshot(stack, "") == before, "a refused drop must not put anything in the bucket"
    screenshot(page, "drop-refused")


def test_the_charts_totals_equal_the_ledger(stack: LocalStack, page: Page) -> None:
    stack.drop_folder("wide", {"image.png": portrait_png(), "audio.wav": voice_wav(3.0)}, {"resolution": "720p"})
    job = stack.wait_for("wide", ["delivered"], timeout=60)
    stack.wait_for("live-one", ["delivered"], timeout=30)
    totals, entries = stack.jobs.month(job.month)
    overall = next(t for t in totals if t.model is None)
    series = {f"{t.model.short} {t.resolution.value}": t for t in totals if t.model and t.resolution}
    assert overall.reserved_micros == 0 and len(entries) == 3

    page.goto(console(stack, f"/money?month={job.month}"))

    segments = page.eval_on_selector_all("#daily-chart rect.segment", "els => els.map(e => +e.dataset.micros)")
    assert sum(segments) == overall.charged_micros == sum(e.charged_micros for e in entries)
    assert page.get_attribute("#daily-chart", "data-total-micros") == str(overall.charged_micros)
    assert page.inner_text("#daily-total") == usd_text(overall.charged_micros)
    assert page.inner_text("#total-charged") == usd_text(overall.charged_micros)
    assert page.inner_text("#total-held") == usd_text(overall.reserved_micros)
    legend = page.eval_on_selector_all(
        "#daily-legend li[data-series]", "els => els.map(e => [e.dataset.series, +e.dataset.micros, e.innerText])"
    )
    assert {label: micros for label, micros, _ in legend} == {k: t.charged_micros for k, t in series.items()}
    for label, micros, text in legend:
        assert usd_text(micros) in text, (label, text)
    table = page.eval_on_selector_all(
        "#ledger-totals tr[data-series]", "els => els.map(e => [e.dataset.series, +e.dataset.micros])"
    )
    assert dict(table) == {k: t.charged_micros for k, t in series.items()}
    lines = page.eval_on_selector_all("#ledger-lines tr[data-job-id]", "els => els.map(e => +e.dataset.micros)")
    assert sorted(lines) == sorted(e.charged_micros for e in entries)
    assert page.get_attribute("#budget-line", "data-micros") == "1000000"

    alerts = BudgetAlertStore(stack.aws.dynamodb, stack.ledger_table).for_month(job.month)
    shown = page.eval_on_selector_all(".alerts .alert", "els => els.map(e => +e.dataset.threshold)")
    assert shown == [a.threshold_percent for a in alerts] == [50]
    screenshot(page, "money")
