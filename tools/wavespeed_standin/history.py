"""The prediction history, ``POST /predictions``: the one place a client learns which tasks exist.

Checked as the documentation describes it: ``page`` and ``page_size`` required (``page_size``
1..100), optional ``model``, ``status`` and ISO 8601 ``created_after`` / ``created_before``; newest
first; only the past 7 days.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tasks import Task

HISTORY_WINDOW = timedelta(days=7)
MAX_PAGE_SIZE = 100
# The ``status`` filter: "processing" covers a task not yet started too.
HISTORY_STATUSES: dict[str, frozenset[str]] = {
    "completed": frozenset({"completed"}),
    "failed": frozenset({"failed"}),
    "processing": frozenset({"created", "processing"}),
}


class InvalidHistoryQuery(Exception):
    """The body breaks a documented rule; the message names the field."""


@dataclass(frozen=True)
class HistoryQuery:
    """One validated body, with the moment it was asked and how late new tasks appear."""

    page: int
    page_size: int
    now: datetime
    lag_seconds: float = 0.0
    model: str | None = None
    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def selects(self, task: Task) -> bool:
        created = task.created_at
        if created < self.now - HISTORY_WINDOW or created > self.now - timedelta(seconds=self.lag_seconds):
            return False
        if self.model is not None and task.model != self.model:
            return False
        if self.status is not None and task.status not in HISTORY_STATUSES[self.status]:
            return False
        if self.created_after is not None and created < self.created_after:
            return False
        return self.created_before is None or created <= self.created_before


def _whole_number(body: dict[str, Any], name: str, low: int, high: int | None) -> int:
    if name not in body:
        raise InvalidHistoryQuery(f"{name} is required")
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise InvalidHistoryQuery(f"{name} must be an integer {bounds}, got {value!r}")
    return value


def _moment(body: dict[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidHistoryQuery(f"{name} must be an ISO 8601 time, got {value!r}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise InvalidHistoryQuery(f"{name} must be an ISO 8601 time, got {value!r}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_history_query(raw: bytes, now: datetime, lag_seconds: float) -> HistoryQuery:
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidHistoryQuery(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidHistoryQuery("request body must be a JSON object with page and page_size")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidHistoryQuery(f"model must be a model path, got {model!r}")
    status = body.get("status")
    if status is not None and status not in HISTORY_STATUSES:
        raise InvalidHistoryQuery(f"status must be one of {', '.join(HISTORY_STATUSES)}, got {status!r}")
    return HistoryQuery(
        page=_whole_number(body, "page", 1, None),
        page_size=_whole_number(body, "page_size", 1, MAX_PAGE_SIZE),
        now=now,
        lag_seconds=max(0.0, lag_seconds),
        model=model or None,
        status=status,
        created_after=_moment(body, "created_after"),
        created_before=_moment(body, "created_before"),
    )
