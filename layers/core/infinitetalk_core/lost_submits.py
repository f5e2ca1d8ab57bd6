"""Which task, if any, a submission whose answer was lost made: decided from WaveSpeed's history, never guessed.

History items carry no ``input`` (and so no webhook URL and no job id): a task can only be told
from another by its model and its creation time. The rule that makes this exact:

- every submission run records its span (``submit_started_at`` .. the moment its answer was lost);
  the task its POST made, if any, was created inside that span, give or take a clock margin;
- every task whose id the pipeline learned is held by its job (the ledger's ``TASK#`` item), so
  the history's tasks that no job holds belong to a submission still in doubt;
- so the doubtful submissions of one model and the unheld tasks in their spans form a small
  assignment problem (each task to exactly one submission whose span covers it, each submission at
  most one task). Only when it has exactly one solution is it acted on: each submission given a
  task adopts it, and each given none is proven to have made none. Two solutions or more mean the
  data cannot tell (two submissions at once, say): the jobs are held, named, for an operator.

What this cannot see: a task of the same model made with the same API key by anything else
(the website, another program) inside a doubtful span looks like the pipeline's own. Use an API
key for this pipeline alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .models import ModelName

# Enough for dozens of submissions in doubt at once; a bigger knot is held rather than searched.
SEARCH_STEPS = 20_000


@dataclass(frozen=True)
class SubmitSpan:
    """A job whose task is unknown, and when its latest submission run could have made one.

    ``ended`` is None while the run may still be going (``submitting``). ``ready``: the run ended long
    enough ago for the history to list anything it made.
    """

    job_id: str
    model: ModelName
    started: datetime
    ended: datetime | None
    ready: bool

    def covers(self, task: ListedTask, margin: timedelta) -> bool:
        if task.model != self.model.value or task.created_at < self.started - margin:
            return False
        return self.ended is None or task.created_at <= self.ended + margin


@dataclass(frozen=True)
class ListedTask:
    """A task as the history lists it; ``item`` is the history's own object (a prediction)."""

    task_id: str
    model: str
    created_at: datetime
    item: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Adopt:
    job_id: str
    task: ListedTask


@dataclass(frozen=True)
class NoTask:
    """Proven: the job's latest submission made no task."""

    job_id: str


@dataclass(frozen=True)
class Ambiguous:
    """The history cannot tell which of these tasks (if any) is whose; ``reason`` says why, for a person."""

    job_ids: tuple[str, ...]
    task_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Undecided:
    """A submission in the knot may still be running or too recent for the history: ask next sweep."""

    job_ids: tuple[str, ...]


Verdict = Adopt | NoTask | Ambiguous | Undecided


def merged_windows(spans: Iterable[SubmitSpan], margin: timedelta) -> list[tuple[datetime, datetime]]:
    """The time ranges to read from the history: the ready spans' windows, overlapping ones merged."""
    windows = sorted(
        (span.started - margin, span.ended + margin) for span in spans if span.ready and span.ended is not None
    )
    merged: list[tuple[datetime, datetime]] = []
    for start, end in windows:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def decide(spans: Sequence[SubmitSpan], unheld: Sequence[ListedTask], margin: timedelta) -> list[Verdict]:
    """A verdict for every ready span; ``unheld`` is every task no job holds in the ready spans' windows."""
    tasks = [task for task in unheld if any(span.ready and span.covers(task, margin) for span in spans)]
    covering = {task.task_id: [s.job_id for s in spans if s.covers(task, margin)] for task in tasks}
    verdicts: list[Verdict] = []
    for job_ids, task_ids in _knots(spans, tasks, covering):
        by_id = {span.job_id: span for span in spans if span.job_id in job_ids}
        ready = tuple(sorted(j for j in job_ids if by_id[j].ready))
        if not ready:
            continue
        if len(ready) < len(job_ids):
            verdicts.append(Undecided(ready))
            continue
        if not task_ids:
            verdicts.extend(NoTask(job_id) for job_id in ready)
            continue
        solutions = _assignments(sorted(task_ids), covering, limit=2)
        listed = {task.task_id: task for task in tasks}
        if solutions is None:
            verdicts.append(Ambiguous(ready, tuple(sorted(task_ids)), "too many submissions and tasks at once"))
        elif not solutions:
            reason = (
                f"{len(task_ids)} task(s) no job holds were made inside the submit spans of {len(ready)} job(s), "
                "more than those submissions can have made (a task made with the same API key by something else?)"
            )
            verdicts.append(Ambiguous(ready, tuple(sorted(task_ids)), reason))
        elif len(solutions) > 1:
            reason = (
                f"{len(task_ids)} task(s) no job holds were made while {len(ready)} job(s) of the same model were "
                "being submitted, and the times fit more than one way of pairing them"
            )
            verdicts.append(Ambiguous(ready, tuple(sorted(task_ids)), reason))
        else:
            owner_of = solutions[0]
            owned = {job_id: task_id for task_id, job_id in owner_of.items()}
            for job_id in ready:
                verdicts.append(Adopt(job_id, listed[owned[job_id]]) if job_id in owned else NoTask(job_id))
    return verdicts


def _knots(
    spans: Sequence[SubmitSpan], tasks: Sequence[ListedTask], covering: dict[str, list[str]]
) -> list[tuple[set[str], set[str]]]:
    """Connected groups of spans and the tasks between them: each is decided on its own."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for span in spans:
        find(f"job:{span.job_id}")
    for task in tasks:
        for job_id in covering[task.task_id]:
            parent[find(f"task:{task.task_id}")] = find(f"job:{job_id}")
    groups: dict[str, tuple[set[str], set[str]]] = {}
    for node in list(parent):
        kind, _, name = node.partition(":")
        jobs, task_ids = groups.setdefault(find(node), (set(), set()))
        (jobs if kind == "job" else task_ids).add(name)
    return list(groups.values())


def _assignments(task_ids: list[str], covering: dict[str, list[str]], limit: int) -> list[dict[str, str]] | None:
    """Up to ``limit`` ways to give every task one covering job, no job two; None if the search is too big."""
    found: list[dict[str, str]] = []
    if len(task_ids) > len({job_id for task_id in task_ids for job_id in covering[task_id]}):
        return found  # more tasks than submissions that could have made them
    chosen: dict[str, str] = {}
    taken: set[str] = set()
    steps = 0

    def place(index: int) -> bool:
        nonlocal steps
        steps += 1
        if steps > SEARCH_STEPS:
            return False
        if index == len(task_ids):
            found.append(dict(chosen))
            return len(found) < limit
        task_id = task_ids[index]
        for job_id in covering[task_id]:
            if job_id in taken:
                continue
            taken.add(job_id)
            chosen[task_id] = job_id
            carry_on = place(index + 1)
            taken.discard(job_id)
            del chosen[task_id]
            if not carry_on:
                return False
        return True

    place(0)
    if steps > SEARCH_STEPS:
        return None
    return found
