"""The console's server-side logic with no stack: chart arithmetic, timelines, filters, form wording."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from infinitetalk_console.chart import budget_chart, daily_chart, month_days, nice_step
from infinitetalk_console.drops import form_text, safe_filename
from infinitetalk_console.server import path_part, templates
from infinitetalk_console.views import JobFilters, shift_month, timeline
from infinitetalk_core.models import (
    FailureKind,
    Job,
    JobSpec,
    JobStatus,
    LedgerEntry,
    ModelName,
    Resolution,
    Role,
)

T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>"


def entry(day: int, micros: int, model: ModelName = ModelName.SINGLE, res: Resolution = Resolution.P480) -> LedgerEntry:
    return LedgerEntry(
        job_id=f"j{day}-{micros}",
        job_name=f"j{day}",
        month="2026-11",
        model=model,
        resolution=res,
        outcome="delivered",
        rule_set="seeds-output-5s",
        input_seconds=Decimal(5),
        billed_seconds=5,
        rate_micros_per_second=30_000,
        estimate_micros=micros,
        charged_micros=micros,
        task_id="t",
        recorded_at=datetime(2026, 11, day, 12, tzinfo=UTC) if day <= 30 else datetime(2026, 12, 1, 1, tzinfo=UTC),
    )


def job(status: JobStatus, **changes: object) -> Job:
    fields: dict[str, object] = {
        "job_id": "anchor-0123456789ab",
        "job_name": "anchor",
        "status": status,
        "status_since": T0 + timedelta(minutes=5),
        "created_at": T0,
        "spec": JobSpec(name="anchor", model=ModelName.SINGLE, inputs={Role.IMAGE: "i.png", Role.AUDIO: "a.wav"}),
        "month": "2026-11",
        **changes,
    }
    return Job.model_validate(fields)


@pytest.mark.parametrize(
    ("maximum", "step"),
    [(0, 10_000), (150_000, 50_000), (600_000, 200_000), (1_000_000, 500_000), (7_300_000, 2_000_000)],
)
def test_axis_steps_are_round_amounts(maximum: int, step: int) -> None:
    assert nice_step(maximum) == step


def test_the_daily_chart_stacks_every_ledger_line_and_loses_no_micro_dollar() -> None:
    entries = [
        entry(1, 150_000),
        entry(1, 300_000, ModelName.MULTI, Resolution.P720),
        entry(14, 123_457),
        entry(31, 60_000),  # charged on 1 December for a November job
    ]
    chart = daily_chart("2026-11", entries)

    assert sum(s.micros for s in chart.segments) == chart.total_micros == 633_457
    assert {e.label: e.micros for e in chart.legend} == {"infinitetalk 480p": 333_457, "multi 720p": 300_000}
    assert chart.later_days == 1
    first_day = [s for s in chart.segments if s.title.startswith("2026-11-01")]
    assert len(first_day) == 2
    lower, upper = sorted(first_day, key=lambda s: -s.y)
    assert upper.y + upper.height == pytest.approx(lower.y), "segments of one day sit on each other"
    assert lower.y + lower.height == pytest.approx(chart.plot_bottom)
    assert upper.height == pytest.approx(2 * lower.height), "heights are proportional to money"


def test_the_budget_chart_puts_the_held_amount_on_top_of_the_charged_line() -> None:
    chart = budget_chart("2026-11", [entry(2, 200_000), entry(5, 100_000)], 150_000, 1_000_000, date(2026, 11, 10))

    assert chart.charged_micros == 300_000 and chart.held_micros == 150_000
    assert chart.committed == "$0.45"
    assert chart.budget is not None and chart.budget.micros == 1_000_000
    assert [line.label for line in chart.thresholds] == ["50%", "80%"]
    assert chart.end is not None and chart.held_box is not None
    x, top, width, height = chart.held_box
    assert x + width / 2 == pytest.approx(chart.end[0])
    assert top + height == pytest.approx(chart.end[1]), "the held box stands on the charged line's end"
    assert chart.budget.y < top, "the budget line is above everything committed"
    assert len(chart.points.split()) == 10, "the line runs to today, not to the month's end"


def test_the_budget_chart_without_a_budget_has_no_budget_line() -> None:
    chart = budget_chart("2026-11", [], 0, 0, date(2026, 12, 20))
    assert chart.budget is None and chart.thresholds == [] and chart.held_box is None
    assert len(chart.points.split()) == len(month_days("2026-11"))


def test_a_delivered_jobs_timeline_uses_the_times_the_stack_keeps() -> None:
    result = {"timings": {"wavespeed_created_at": "2026-11-03T09:00:02.000000Z", "inference_ms": 90_000}}
    steps = timeline(job(JobStatus.DELIVERED), result, None, entry(3, 1))

    assert [(s.label, s.state) for s in steps] == [
        ("received", "done"),
        ("submitted", "done"),
        ("reported", "done"),
        ("delivered", "done"),
    ]
    assert steps[0].at == T0
    assert steps[1].at == datetime(2026, 11, 3, 9, 0, 2, tzinfo=UTC)
    assert steps[2].at == datetime(2026, 11, 3, 9, 1, 32, tzinfo=UTC)
    assert steps[3].at == datetime(2026, 11, 3, 12, tzinfo=UTC)


def test_a_running_jobs_timeline_shows_where_it_is_and_what_is_still_to_come() -> None:
    steps = timeline(job(JobStatus.SUBMITTED), None, None, None)
    assert [(s.label, s.state) for s in steps] == [
        ("received", "done"),
        ("submitted", "current"),
        ("reported", "pending"),
        ("delivered", "pending"),
    ]
    assert steps[1].at == T0 + timedelta(minutes=5)
    assert steps[0].note == ""


def test_a_rejected_or_refused_job_never_reached_wavespeed_and_says_so() -> None:
    for status, kind in (
        (JobStatus.REJECTED, FailureKind.INVALID_INPUT),
        (JobStatus.FAILED, FailureKind.REFUSED_BY_API),
    ):
        steps = timeline(job(status, failure_kind=kind), None, None, None)
        assert [(s.label, s.state) for s in steps] == [
            ("received", "done"),
            ("submitted", "skipped"),
            ("reported", "skipped"),
            (status.value, "failed"),
        ]
        assert steps[-1].note == kind.value


def test_a_generation_failure_happened_after_the_task_ran() -> None:
    steps = timeline(job(JobStatus.FAILED, failure_kind=FailureKind.GENERATION_FAILED), None, None, None)
    assert [s.state for s in steps] == ["done", "done", "done", "failed"]
    assert steps[1].note == "time not kept"


def test_filters_keep_what_they_understand_and_name_what_they_do_not() -> None:
    filters = JobFilters.from_query({"name": " Anch ", "status": "exploded", "month": "2026-13"})
    assert filters.name == "Anch" and filters.status is None and filters.month == ""
    assert len(filters.problems) == 2
    good = JobFilters.from_query({"status": "delivered", "month": "2026-11"})
    assert good.matches(job(JobStatus.DELIVERED))
    assert not good.matches(job(JobStatus.FAILED))
    assert not JobFilters.from_query({"month": "2026-10"}).matches(job(JobStatus.DELIVERED))
    assert JobFilters.from_query({"name": "ANCH"}).matches(job(JobStatus.DELIVERED))
    assert good.query() == {"status": "delivered", "month": "2026-11"}


def test_months_step_over_the_year() -> None:
    assert shift_month("2026-12", 1) == "2027-01"
    assert shift_month("2026-01", -1) == "2025-12"


def test_the_form_names_its_fields_where_the_command_line_names_flags() -> None:
    assert form_text("--left-audio: a.txt is empty") == "left_audio: a.txt is empty"
    assert form_text("infinitetalk needs --audio and --image") == "infinitetalk needs audio and image"
    assert form_text("range 1--2 stays") == "range 1--2 stays"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("portrait.png", "portrait.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\x\\voice 1.WAV", "voice-1.WAV"),
        ("..", "file"),
    ],
)
def test_staged_file_names_keep_only_a_safe_base_name(given: str, kept: str) -> None:
    assert safe_filename(given) == kept


def test_every_template_escapes_what_it_is_given() -> None:
    environment = templates()
    rendered = environment.from_string("{{ value }} <a href='/jobs/{{ value|path }}'>").render(value=HOSTILE)
    assert HOSTILE not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered
    assert path_part(HOSTILE) == "%3Cscript%3Ealert%281%29%3C%2Fscript%3E"
    assert path_part("a/../b?c#d") == "a%2F..%2Fb%3Fc%23d"
