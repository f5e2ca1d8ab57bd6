"""WaveSpeed API client that knows which failures prove no task was created."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, Any

import httpx

from .models import ModelName
from .outbound import OutputDownloader, OutputStream, readable_url
from .wavespeed import (
    RETRYABLE_READ_CODES,
    HistoryPage,
    HistoryRefused,
    NoTaskCreated,
    NotATaskId,
    Prediction,
    SubmitOutcomeUnknown,
    SubmitRefused,
    TaskUnavailable,
    TemporarilyUnavailable,
    WaveSpeedError,
    history_time,
    task_path,
)


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
    """Thin typed wrapper over the REST API; one instance per cold start.

    ``http`` talks to the API at ``base_url`` only and is the one client that sends the API key;
    outputs are fetched by ``outputs``, which never sends it.
    """

    def __init__(
        self, base_url: str, api_key: Callable[[], str], http: httpx.Client, *, outputs: OutputDownloader
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._http = http
        self._outputs = outputs

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
            path = task_path(task_id)
        except ValueError as exc:
            raise NotATaskId(f"not asked about: {exc}") from exc
        try:
            response = self._http.get(f"{self._base_url}/predictions/{path}/result", headers=self._headers())
        except httpx.TransportError as exc:
            raise TemporarilyUnavailable(f"result request failed: {exc}") from exc
        if response.status_code in RETRYABLE_READ_CODES or response.status_code >= 500:
            # A refused key (revoked, rotated, an auth outage) says nothing about the task: never settle on it.
            raise TemporarilyUnavailable(f"result request answered {response.status_code}: {_message(response)}")
        if response.status_code >= 400:
            raise TaskUnavailable(f"result request refused ({response.status_code}): {_message(response)}")
        try:
            prediction = Prediction.model_validate(_data(response))
        except (ValueError, WaveSpeedError) as exc:
            # A maintenance page or a changed shape: the task is fine, this answer is not.
            raise TemporarilyUnavailable(f"unreadable result answer: {exc}") from exc
        if prediction.id != task_id:
            raise TemporarilyUnavailable(f"the result answer for {task_id} describes another task")
        return prediction

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

    def history(
        self,
        *,
        page: int,
        page_size: int,
        model: ModelName | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> HistoryPage:
        """One page of the tasks WaveSpeed holds (the past 7 days); safe to repeat.

        Every failure is ``TemporarilyUnavailable`` (an answer with no verdict on which tasks exist),
        or ``HistoryRefused`` for a 4xx, which asking the same again will not change.
        """
        body: dict[str, object] = {"page": page, "page_size": page_size}
        if model is not None:
            body["model"] = model.value
        if created_after is not None:
            body["created_after"] = history_time(created_after)
        if created_before is not None:
            body["created_before"] = history_time(created_before)
        try:
            headers = self._headers()
        except Exception as exc:
            raise TemporarilyUnavailable(f"could not read the WaveSpeed API key: {exc}") from exc
        try:
            response = self._http.post(f"{self._base_url}/predictions", json=body, headers=headers)
        except httpx.TransportError as exc:
            raise TemporarilyUnavailable(f"history request failed: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TemporarilyUnavailable(f"history request answered {response.status_code}: {_message(response)}")
        if response.status_code >= 400:
            raise HistoryRefused(f"history request refused ({response.status_code}): {_message(response)}")
        try:
            answer = HistoryPage.model_validate(_data(response))
        except (ValueError, WaveSpeedError) as exc:
            raise TemporarilyUnavailable(f"unreadable history answer: {exc}") from exc
        if answer.page != page or len(answer.items) > page_size:
            raise TemporarilyUnavailable(f"the history answered page {answer.page} with {len(answer.items)} items")
        return answer

    @contextmanager
    def stream_output(self, url: str) -> Iterator[OutputStream]:
        """Open an output for streaming, under the download policy and without the API key.

        Raises ``OutputRefused`` (the policy said no) or ``TaskUnavailable`` (a 4xx), both final.
        """
        with self._outputs.open(url) as output:
            code = output.status_code
            if 400 <= code < 500 and code != 429:
                raise TaskUnavailable(f"output {readable_url(output.response.url)} answered {code}")
            if code >= 300:
                raise TemporarilyUnavailable(f"output {readable_url(output.response.url)} answered {code}")
            output.refuse_declared_oversize()
            yield output
