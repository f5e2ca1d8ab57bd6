"""WaveSpeed API client that knows which failures prove no task was created."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from .models import ModelName

PredictionStatus = Literal["created", "processing", "completed", "failed"]
FINAL_STATUSES = frozenset({"completed", "failed"})
# WaveSpeed's task ids are 32 lowercase hex characters; anything else never reaches a URL.
TASK_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def is_task_id(value: str) -> bool:
    return TASK_ID_PATTERN.fullmatch(value) is not None


class Prediction(BaseModel):
    """The ``data`` of a submit or result answer, and the body of a webhook."""

    model_config = ConfigDict(extra="ignore")

    id: str
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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("error") or payload)[:500]
    return str(payload)[:500]


def _data(response: httpx.Response) -> Any:
    payload = response.json()
    if not isinstance(payload, dict) or "data" not in payload:
        raise WaveSpeedError(f"unexpected answer from WaveSpeed: {str(payload)[:200]}")
    return payload["data"]


class WaveSpeedClient:
    """Thin typed wrapper over the REST API; one instance per cold start."""

    def __init__(self, base_url: str, api_key: Callable[[], str], http: httpx.Client) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._http = http

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key()}"}

    def submit(self, model: ModelName, body: dict[str, object], webhook_url: str | None) -> Prediction:
        """POST a task once. Never retried here: the caller decides from the exception type."""
        params = {"webhook": webhook_url} if webhook_url else None
        try:
            headers = self._headers()
        except Exception as exc:
            raise NoTaskCreated(f"could not read the WaveSpeed API key: {exc}") from exc
        try:
            response = self._http.post(f"{self._base_url}/{model.value}", json=body, params=params, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise NoTaskCreated(f"could not connect to WaveSpeed: {exc}") from exc
        except httpx.TransportError as exc:
            raise SubmitOutcomeUnknown(f"submit answer lost ({type(exc).__name__}: {exc})") from exc
        if response.status_code == 429:
            raise NoTaskCreated("rate limited (429)", _retry_after(response))
        if response.status_code >= 500:
            raise SubmitOutcomeUnknown(f"WaveSpeed answered {response.status_code}: {_message(response)}")
        if response.status_code >= 400:
            raise SubmitRefused(f"WaveSpeed refused the job ({response.status_code}): {_message(response)}")
        try:
            return Prediction.model_validate(_data(response))
        except (ValueError, WaveSpeedError) as exc:
            raise SubmitOutcomeUnknown(f"unreadable submit answer: {exc}") from exc

    def result(self, task_id: str) -> Prediction:
        """The authoritative state of a task; safe to repeat."""
        try:
            response = self._http.get(f"{self._base_url}/predictions/{task_id}/result", headers=self._headers())
        except httpx.TransportError as exc:
            raise TemporarilyUnavailable(f"result request failed: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TemporarilyUnavailable(f"result request answered {response.status_code}: {_message(response)}")
        if response.status_code >= 400:
            raise TaskUnavailable(f"result request refused ({response.status_code}): {_message(response)}")
        try:
            return Prediction.model_validate(_data(response))
        except (ValueError, WaveSpeedError) as exc:
            # A maintenance page or a changed shape: the task is fine, this answer is not.
            raise TemporarilyUnavailable(f"unreadable result answer: {exc}") from exc

    def upload_media(self, filename: str, content: IO[bytes], content_type: str) -> str:
        """Hand a file to WaveSpeed's own storage; returns the URL to pass to a model."""
        try:
            response = self._http.post(
                f"{self._base_url}/media/upload/binary",
                files={"file": (filename, content, content_type)},
                headers=self._headers(),
            )
        except httpx.TransportError as exc:
            raise NoTaskCreated(f"media upload failed: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise NoTaskCreated(f"media upload answered {response.status_code}", _retry_after(response))
        if response.status_code >= 400:
            raise SubmitRefused(f"media upload refused ({response.status_code}): {_message(response)}")
        return str(_data(response)["download_url"])

    def webhook_secret(self) -> str:
        response = self._http.get(f"{self._base_url}/webhook/secret", headers=self._headers())
        response.raise_for_status()
        return str(_data(response)["secret"])

    @contextmanager
    def stream_output(self, url: str) -> Iterator[httpx.Response]:
        """Open an output for streaming; the caller reads it in chunks."""
        with self._http.stream("GET", url) as response:
            if 400 <= response.status_code < 500 and response.status_code != 429:
                raise TaskUnavailable(f"output {url.split('?', 1)[0]} answered {response.status_code}")
            response.raise_for_status()
            yield response


def backoff_delays(attempts: int, base: float, cap: float = 20.0) -> Iterator[float]:
    """Exponential delays between attempts: base, 2*base, 4*base ... capped."""
    for attempt in range(attempts - 1):
        yield min(cap, base * (2**attempt))
