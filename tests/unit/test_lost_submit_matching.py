"""The rule that pairs lost submit answers with the history's tasks: exact when it acts, held when it cannot be."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from infinitetalk_core.lost_submits import (
    Adopt,
    Ambiguous,
    ListedTask,
    NoTask,
    SubmitSpan,
    Undecided,
    decide,
    merged_windows,
)
from infinitetalk_core.models import ModelName

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
MARGIN = timedelta(seconds=1)


def span(
    job: str, start: float, end: float | None, ready: bool = True, model: ModelName = ModelName.SINGLE
) -> SubmitSpan:
    return SubmitSpan(
        job,
        model,
        T0 + timedelta(seconds=start),
        None if end is None else T0 + timedelta(seconds=end),
        ready,
    )


def task(name: str, at: float, model: ModelName = ModelName.SINGLE) -> ListedTask:
    return ListedTask(name.ljust(32, "0"), model.value, T0 + timedelta(seconds=at), {"id": name})


def test_the_one_task_in_a_lone_span_is_adopted() -> None:
    [verdict] = decide([span("a", 0, 2)], [task("t1", 1)], MARGIN)
    assert verdict == Adopt("a", task("t1", 1))


def test_no_task_in_the_span_proves_none_was_made() -> None:
    tasks = [task("before", -5), task("after", 9), task("other", 1, ModelName.MULTI)]
    assert decide([span("a", 0, 2)], tasks, MARGIN) == [NoTask("a")]


def test_the_margin_is_inclusive_and_ends_there() -> None:
    assert decide([span("a", 0, 2)], [task("edge", -1)], MARGIN) == [Adopt("a", task("edge", -1))]
    assert decide([span("a", 0, 2)], [task("late", 3)], MARGIN) == [Adopt("a", task("late", 3))]
    assert decide([span("a", 0, 2)], [task("out", 3.001)], MARGIN) == [NoTask("a")]


def test_two_submissions_at_once_with_two_tasks_are_held_not_guessed() -> None:
    spans = [span("a", 0, 1), span("b", 0.5, 1.5)]
    [verdict] = decide(spans, [task("t1", 0.8), task("t2", 1.1)], MARGIN)
    assert isinstance(verdict, Ambiguous)
    assert verdict.job_ids == ("a", "b") and len(verdict.task_ids) == 2
    assert "more than one way" in verdict.reason


def test_one_task_two_submissions_is_held() -> None:
    [verdict] = decide([span("a", 0, 1), span("b", 0.5, 1.5)], [task("t1", 1)], MARGIN)
    assert isinstance(verdict, Ambiguous) and verdict.job_ids == ("a", "b")


def test_times_that_fit_only_one_pairing_are_decided_exactly() -> None:
    # t1 can only be a's (b started later); so t2 must be b's.
    spans = [span("a", 0, 3), span("b", 2.5, 6)]
    verdicts = decide(spans, [task("t1", 0.5), task("t2", 2.8)], MARGIN)
    assert sorted(verdicts, key=repr) == sorted([Adopt("a", task("t1", 0.5)), Adopt("b", task("t2", 2.8))], key=repr)


def test_a_submission_given_nothing_in_the_only_pairing_is_proven_empty() -> None:
    # One task, reachable only from b's span: a made nothing, whatever a's span touches.
    spans = [span("a", 0, 1), span("b", 5, 6)]
    verdicts = decide(spans, [task("t1", 5.5)], MARGIN)
    assert sorted(verdicts, key=repr) == sorted([NoTask("a"), Adopt("b", task("t1", 5.5))], key=repr)


def test_more_tasks_than_submissions_could_make_is_held() -> None:
    [verdict] = decide([span("a", 0, 2)], [task("t1", 0.5), task("t2", 1.5)], MARGIN)
    assert isinstance(verdict, Ambiguous) and "more than those submissions" in verdict.reason


def test_a_submission_still_running_or_too_recent_leaves_the_knot_for_later() -> None:
    running = decide([span("a", 0, 2), span("b", 1, None, ready=False)], [task("t1", 1.5)], MARGIN)
    assert running == [Undecided(("a",))]
    recent = decide([span("a", 0, 2), span("b", 1, 3, ready=False)], [task("t1", 1.5)], MARGIN)
    assert recent == [Undecided(("a",))]
    # A knot of only unready spans gets no verdict at all.
    assert decide([span("b", 1, None, ready=False)], [task("t1", 1.5)], MARGIN) == []


def test_separate_models_and_separate_times_are_separate_questions() -> None:
    spans = [span("a", 0, 1), span("m", 0, 1, model=ModelName.MULTI), span("c", 100, 101)]
    tasks = [task("t1", 0.5), task("tm", 0.5, ModelName.MULTI)]
    verdicts = decide(spans, tasks, MARGIN)
    assert sorted(verdicts, key=repr) == sorted(
        [Adopt("a", task("t1", 0.5)), Adopt("m", task("tm", 0.5, ModelName.MULTI)), NoTask("c")], key=repr
    )


def test_a_knot_too_big_to_search_is_held() -> None:
    # Ten tasks any of twelve submissions could have made, and two that only "j10" could: no pairing
    # exists, and the search would only learn so after trying the first ten every way.
    spans = [span(f"j{i:02d}", 0, 10) for i in range(10)] + [span("j10", 0, 21), span("j11", 0, 10)]
    tasks = [task(f"t{i:02d}", 5) for i in range(10)] + [task("t98", 20.5), task("t99", 20.6)]
    [verdict] = decide(spans, tasks, MARGIN)
    assert isinstance(verdict, Ambiguous) and len(verdict.job_ids) == 12
    assert "too many" in verdict.reason


def test_the_windows_read_are_the_ready_spans_merged() -> None:
    spans = [span("a", 0, 1), span("b", 2, 3), span("c", 10, 11), span("d", 20, None, ready=False)]
    assert merged_windows(spans, MARGIN) == [
        (T0 - MARGIN, T0 + timedelta(seconds=3) + MARGIN),
        (T0 + timedelta(seconds=10) - MARGIN, T0 + timedelta(seconds=11) + MARGIN),
    ]
