"""WaveSpeed's API as data: task ids, answers, the errors that say whether a task exists, retry timing.

Kept apart from the HTTP client (``wavespeed_client``) so the webhook's cold start never imports httpx.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

PredictionStatus = Literal["created", "processing", "completed", "failed"]
FINAL_STATUSES = frozenset({"completed", "failed"})
# WaveSpeed's task ids are 32 lowercase hex characters; anything else never reaches a URL.
TASK_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


# Answers to a read that say nothing about the task itself: rate limits, time-outs and a refused key.
RETRYABLE_READ_CODES = frozenset({401, 403, 408, 429})


def is_task_id(value: str) -> bool:
    return TASK_ID_PATTERN.fullmatch(value) is not None


def _task_id(value: str) -> str:
    if not is_task_id(value):
        raise ValueError(f"{value[:80]!r} is not a WaveSpeed task id (32 lowercase hex characters)")
    return value


def task_path(task_id: str) -> str:
    """The URL path segment for a task: only a task id of WaveSpeed's shape, escaped all the same."""
    return quote(_task_id(task_id), safe="")


class Prediction(BaseModel):
    """The ``data`` of a submit or result answer, and the body of a webhook.

    An id of any other shape makes the answer unreadable: it would otherwise reach a URL later.
    """

    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, AfterValidator(_task_id)]
    model: str = ""
    status: PredictionStatus
    outputs: list[str] = Field(default_factory=list)
    has_nsfw_contents: list[bool] = Field(default_factory=list)
    error: str | None = ""
    created_at: datetime | None = None
    timings: dict[str, int] = Field(default_factory=dict)
    urls: dict[str, str] = Field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class HistoryPage(BaseModel):
    """One page of the prediction history (``POST /predictions``), newest first.

    Items stay raw: the reader decides what an item it cannot read means for the question it asks.
    """

    model_config = ConfigDict(extra="ignore")

    page: int
    total: int = Field(ge=0)
    items: list[dict[str, Any]] = Field(default_factory=list)


def history_time(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as the history's ``created_after`` / ``created_before`` take it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WaveSpeedError(Exception):
    """Base of every failure talking to WaveSpeed."""


class NoTaskCreated(WaveSpeedError):
    """The answer proves nothing was created (429, or the connection never opened): safe to retry."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class SubmitRefused(WaveSpeedError):
    """WaveSpeed answered and refused the request (bad input, auth, balance): retrying will not help."""


class SubmitOutcomeUnknown(WaveSpeedError):
    """The request may have been accepted but the answer was lost: a task may exist and be billed."""


class TemporarilyUnavailable(WaveSpeedError):
    """A read failed in a way worth retrying later (429, 5xx, network, an unreadable answer)."""


class TaskUnavailable(WaveSpeedError):
    """WaveSpeed refuses to give the task's result or output (4xx): asking again will not help."""


class HistoryRefused(WaveSpeedError):
    """WaveSpeed refused a history request (4xx): no verdict on which tasks exist."""


class NotATaskId(TaskUnavailable):
    """A task id of another shape than WaveSpeed's: it is never put into a URL, so it cannot be asked about."""


def backoff_delays(attempts: int, base: float, cap: float = 20.0) -> Iterator[float]:
    """Exponential delays between attempts: base, 2*base, 4*base ... capped."""
    for attempt in range(attempts - 1):
        yield min(cap, base * (2**attempt))
