"""The project's own client and webhook check work against the stand-in unchanged.

The stand-in never imports the code it stands in for; this test is where the two meet.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest

from infinitetalk_core.models import ModelName
from infinitetalk_core.outbound import OutputDownloader, OutputPolicy
from infinitetalk_core.wavespeed import NoTaskCreated, SubmitOutcomeUnknown, SubmitRefused
from infinitetalk_core.wavespeed_client import WaveSpeedClient
from infinitetalk_core.webhooks import WebhookRejected, verify_webhook
from tests.standin.conftest import API_KEY, FileServer, Receiver, portrait_png, tone_wav
from wavespeed_standin import WaveSpeedStandin


@pytest.fixture
def client(standin: WaveSpeedStandin) -> Iterator[WaveSpeedClient]:
    outputs = OutputDownloader.build(OutputPolicy.parse(standin.root_url), httpx.Timeout(30))
    with httpx.Client(timeout=30, trust_env=False) as http:
        yield WaveSpeedClient(standin.base_url, lambda: API_KEY, http, outputs=outputs)


def test_submit_result_webhook_and_output_through_the_core_client(
    standin: WaveSpeedStandin, client: WaveSpeedClient, files: FileServer, receiver: Receiver
) -> None:
    image = client.upload_media("face.png", io.BytesIO(portrait_png()), "image/png")
    body: dict[str, object] = {"image": image, "audio": files.add("a.wav", "audio/wav", tone_wav(0.8))}
    created = client.submit(ModelName.SINGLE, body, receiver.url("core"))
    assert created.status == "created"

    [delivery] = receiver.wait_for(1)
    secret = client.webhook_secret()
    assert verify_webhook(delivery.headers, delivery.body, secret) == delivery.headers["webhook-id"]
    with pytest.raises(WebhookRejected):
        verify_webhook(delivery.headers, delivery.body + b" ", secret)

    done = client.result(created.id)
    assert done.status == "completed" and done.is_final
    assert done.has_nsfw_contents == [False]
    with client.stream_output(done.outputs[0]) as response:
        video = b"".join(response.iter_bytes())
    assert video[4:8] == b"ftyp"


def test_the_core_client_reads_the_fault_answers_as_intended(
    standin: WaveSpeedStandin, client: WaveSpeedClient, files: FileServer
) -> None:
    body: dict[str, object] = {
        "image": files.add("p.png", "image/png", portrait_png()),
        "audio": "http://127.0.0.1:9/a",
    }
    before = standin.submit_count
    standin.faults.submit_429_next = 1
    with pytest.raises(NoTaskCreated) as limited:
        client.submit(ModelName.SINGLE, body, None)
    assert limited.value.retry_after == 0
    with pytest.raises(SubmitRefused, match="resolution"):
        client.submit(ModelName.SINGLE, {**body, "resolution": "4k"}, None)
    assert standin.submit_count == before
    standin.faults.submit_500_after_create_next = 1
    with pytest.raises(SubmitOutcomeUnknown):
        client.submit(ModelName.SINGLE, body, None)
    assert standin.submit_count == before + 1
