"""The core client's history call against the stand-in: the body it sends, the pages it reads, its failures."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from infinitetalk_core.models import ModelName
from infinitetalk_core.outbound import OutputDownloader, OutputPolicy
from infinitetalk_core.wavespeed import HistoryRefused, TemporarilyUnavailable
from infinitetalk_core.wavespeed_client import WaveSpeedClient
from tests.standin.conftest import API_KEY, wait_final
from wavespeed_standin import WaveSpeedStandin

CLOSED = "http://127.0.0.1:9"


def client_for(standin: WaveSpeedStandin, http: httpx.Client, key: str = API_KEY) -> WaveSpeedClient:
    outputs = OutputDownloader.build(OutputPolicy.parse(standin.root_url), httpx.Timeout(30))
    return WaveSpeedClient(standin.base_url, lambda: key, http, outputs=outputs)


@pytest.fixture
def client(standin: WaveSpeedStandin) -> Iterator[WaveSpeedClient]:
    with httpx.Client(timeout=30, trust_env=False) as http:
        yield client_for(standin, http)


def test_the_core_client_reads_the_history_page_by_page_with_its_filters(
    standin: WaveSpeedStandin, api: httpx.Client, client: WaveSpeedClient
) -> None:
    start = datetime.now(UTC) - timedelta(milliseconds=5)
    made = [
        api.post("/wavespeed-ai/infinitetalk", json={"image": f"{CLOSED}/p.png", "audio": f"{CLOSED}/a.wav"}).json()[
            "data"
        ]["id"]
        for _ in range(3)
    ]
    for task_id in made:
        wait_final(api, task_id)
    end = datetime.now(UTC) + timedelta(seconds=1)
    pages = [
        client.history(page=n, page_size=2, model=ModelName.SINGLE, created_after=start, created_before=end)
        for n in (1, 2)
    ]
    assert [(p.page, p.total, len(p.items)) for p in pages] == [(1, 3, 2), (2, 3, 1)]
    assert {item["id"] for p in pages for item in p.items} == set(made)
    other = client.history(page=1, page_size=100, model=ModelName.MULTI, created_after=start, created_before=end)
    assert (other.total, other.items) == (0, [])


def test_the_core_client_names_each_history_failure(standin: WaveSpeedStandin, client: WaveSpeedClient) -> None:
    standin.faults.history_500_next = 1
    with pytest.raises(TemporarilyUnavailable, match="500"):
        client.history(page=1, page_size=10)
    with pytest.raises(HistoryRefused, match="400"):
        client.history(page=1, page_size=101)
    with httpx.Client(timeout=30, trust_env=False) as http:
        with pytest.raises(HistoryRefused, match="401"):
            client_for(standin, http, key="not-the-key").history(page=1, page_size=10)

        def no_key() -> str:
            raise RuntimeError("secret unreadable")

        outputs = OutputDownloader.build(OutputPolicy.parse(standin.root_url), httpx.Timeout(30))
        keyless = WaveSpeedClient(standin.base_url, no_key, http, outputs=outputs)
        with pytest.raises(TemporarilyUnavailable, match="API key"):
            keyless.history(page=1, page_size=10)
