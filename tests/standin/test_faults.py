"""Each fault knob makes its rare WaveSpeed behaviour happen, and only when asked."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest

from tests.standin.conftest import SECRET, FileServer, Receiver, portrait_png, tone_wav, wait_final
from wavespeed_standin import Faults, WaveSpeedStandin

SINGLE = "/wavespeed-ai/infinitetalk"


def job(files: FileServer, seconds: float = 0.5) -> dict[str, object]:
    return {
        "image": files.add("p.png", "image/png", portrait_png(64, 80)),
        "audio": files.add("a.wav", "audio/wav", tone_wav(seconds)),
    }


def signature_is_valid(headers: dict[str, str], body: bytes) -> bool:
    message = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    digest = hmac.new(SECRET.removeprefix("whsec_").encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["webhook-signature"], f"v3,{digest}")


def test_faults_draw_counters_first_then_a_seeded_rate_and_reset_in_place() -> None:
    faults = Faults(fail_next=2)
    assert [faults.draw("fail") for _ in range(3)] == [True, True, False]
    assert faults.fail_next == 0
    faults.fail_rate = 0.5
    first = [faults.draw("fail") for _ in range(40)]
    assert 5 < sum(first) < 35
    faults.seed = 7
    again = Faults(seed=7, fail_rate=0.5)
    assert [faults.draw("fail") for _ in range(20)] == [again.draw("fail") for _ in range(20)]
    same = faults
    faults.reset()
    assert same is faults and faults == Faults()
    assert not any(faults.draw("fail") for _ in range(50))


def test_429_creates_nothing_and_says_when_to_retry(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer
) -> None:
    before, tasks_before = standin.submit_count, len(standin.tasks)
    standin.faults.submit_429_next = 2
    standin.faults.retry_after_seconds = 1.5
    body = job(files)
    for _ in range(2):
        answer = api.post(SINGLE, json=body)
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "1.5"
        assert answer.json()["code"] == 429
    assert standin.faults.submit_429_next == 0
    assert (standin.submit_count, len(standin.tasks)) == (before, tasks_before)
    assert api.post(SINGLE, json=body).status_code == 200
    assert standin.submit_count == before + 1


def test_a_plain_500_creates_nothing(standin: WaveSpeedStandin, api: httpx.Client, files: FileServer) -> None:
    before = standin.submit_count
    standin.faults.submit_500_rate = 1.0
    assert api.post(SINGLE, json=job(files)).status_code == 500
    assert standin.submit_count == before


def test_a_lost_answer_still_creates_runs_bills_and_calls_back(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer, receiver: Receiver
) -> None:
    before = standin.submit_count
    standin.faults.submit_500_after_create_next = 1
    answer = api.post(SINGLE, json=job(files), params={"webhook": receiver.url("lost")})
    assert answer.status_code == 500
    assert "data" not in answer.json()
    assert standin.submit_count == before + 1
    [delivery] = receiver.wait_for(1)
    payload = json.loads(delivery.body)
    assert payload["status"] == "completed"
    assert payload["id"] in standin.tasks
    assert delivery.path.endswith("?job=lost")


def test_result_reads_can_fail_with_500(api: httpx.Client, standin: WaveSpeedStandin, files: FileServer) -> None:
    task_id = api.post(SINGLE, json=job(files)).json()["data"]["id"]
    standin.faults.result_500_rate = 1.0
    assert api.get(f"/predictions/{task_id}/result").status_code == 500
    standin.faults.result_500_rate = 0.0
    assert wait_final(api, task_id)["status"] == "completed"


def test_a_forced_failure_reports_its_error_in_the_webhook(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer, receiver: Receiver
) -> None:
    standin.faults.fail_next = 1
    standin.faults.fail_error = "Inference failed: no face detected"
    task_id = api.post(SINGLE, json=job(files), params={"webhook": receiver.url("f")}).json()["data"]["id"]
    [delivery] = receiver.wait_for(1)
    payload = json.loads(delivery.body)
    assert (payload["id"], payload["status"]) == (task_id, "failed")
    assert payload["error"] == "Inference failed: no face detected"
    assert payload["outputs"] == []
    assert signature_is_valid(delivery.headers, delivery.body)
    assert wait_final(api, task_id)["status"] == "failed"
    assert httpx.get(standin.output_url(task_id), trust_env=False).status_code == 404
    assert standin.wait_idle(10)
    [sent] = [d for d in standin.webhook_deliveries if d.task_id == task_id]
    assert sent.status == "failed"


def test_a_dropped_webhook_is_never_sent(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer, receiver: Receiver
) -> None:
    standin.faults.drop_webhook_next = 1
    task_id = api.post(SINGLE, json=job(files), params={"webhook": receiver.url("d")}).json()["data"]["id"]
    assert wait_final(api, task_id)["status"] == "completed"
    assert standin.wait_idle(10)
    assert receiver.received == []
    assert not [d for d in standin.webhook_deliveries if d.task_id == task_id]


def test_copies_of_a_webhook_reuse_its_id_and_bytes(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer, receiver: Receiver
) -> None:
    standin.faults.webhook_copies = 3
    task_id = api.post(SINGLE, json=job(files), params={"webhook": receiver.url("c")}).json()["data"]["id"]
    copies = receiver.wait_for(3)
    assert len({c.headers["webhook-id"] for c in copies}) == 1
    assert len({c.body for c in copies}) == 1
    assert all(signature_is_valid(c.headers, c.body) for c in copies)
    assert standin.wait_idle(10)
    sent = [d for d in standin.webhook_deliveries if d.task_id == task_id]
    assert [d.copy for d in sent] == [1, 2, 3]
    assert len(receiver.received) == 3


def test_a_badly_signed_webhook_is_recorded_as_forged(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer, receiver: Receiver
) -> None:
    standin.faults.bad_signature_next = 1
    task_id = api.post(SINGLE, json=job(files), params={"webhook": receiver.url("b")}).json()["data"]["id"]
    [delivery] = receiver.wait_for(1)
    assert delivery.headers["webhook-signature"].startswith("v3,")
    assert not signature_is_valid(delivery.headers, delivery.body)
    assert standin.wait_idle(10), "a delivery is recorded once its answer is in"
    [sent] = [d for d in standin.webhook_deliveries if d.task_id == task_id]
    assert sent.forged


def test_a_delayed_webhook_keeps_the_stand_in_busy_until_sent(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer, receiver: Receiver
) -> None:
    standin.faults.webhook_delay_seconds = 1.0
    task_id = api.post(SINGLE, json=job(files), params={"webhook": receiver.url("late")}).json()["data"]["id"]
    assert wait_final(api, task_id)["status"] == "completed"
    assert not standin.wait_idle(0.3)
    assert receiver.received == []
    [delivery] = receiver.wait_for(1, timeout=10)
    assert standin.wait_idle(10)
    task = standin.tasks[task_id]
    [sent] = [d for d in standin.webhook_deliveries if d.task_id == task_id]
    assert task.completed_at is not None
    assert (sent.sent_at - task.completed_at).total_seconds() >= 0.9
    assert signature_is_valid(delivery.headers, delivery.body)


@pytest.mark.parametrize(("status", "tries"), [(503, 3), (400, 1)])
def test_webhook_retries_server_errors_only_and_only_three_times(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer, receiver: Receiver, status: int, tries: int
) -> None:
    receiver.status = status
    task_id = api.post(SINGLE, json=job(files), params={"webhook": receiver.url("r")}).json()["data"]["id"]
    assert wait_final(api, task_id)["status"] == "completed"
    assert standin.wait_idle(10)
    sent = [d for d in standin.webhook_deliveries if d.task_id == task_id]
    assert [d.http_status for d in sent] == [status] * tries
    assert [d.attempt for d in sent] == list(range(1, tries + 1))
    assert len(receiver.received) == tries


def test_a_webhook_away_from_loopback_is_refused_without_connecting(
    standin: WaveSpeedStandin, api: httpx.Client, files: FileServer
) -> None:
    task_id = api.post(SINGLE, json=job(files), params={"webhook": "http://192.0.2.1/hook?job=x"}).json()["data"]["id"]
    started = time.monotonic()
    assert wait_final(api, task_id)["status"] == "completed"
    assert standin.wait_idle(5)
    assert time.monotonic() - started < 5
    [sent] = [d for d in standin.webhook_deliveries if d.task_id == task_id]
    assert sent.http_status is None
    assert "loopback" in sent.error


def test_slow_outputs_are_throttled(standin: WaveSpeedStandin, api: httpx.Client, files: FileServer) -> None:
    done = wait_final(api, api.post(SINGLE, json=job(files)).json()["data"]["id"])
    size = len(httpx.get(done["outputs"][0], trust_env=False).content)
    standin.faults.output_bytes_per_second = size / 1.0
    started = time.monotonic()
    slow = httpx.get(done["outputs"][0], trust_env=False)
    elapsed = time.monotonic() - started
    assert len(slow.content) == size
    assert 0.8 < elapsed < 5


def test_knobs_set_from_command_line_text_take_their_declared_types() -> None:
    faults = Faults()
    faults.assign(["drop_webhook_rate=0.5", "fail_next=2", "fail_error=GPU on fire", "output_bytes_per_second=none"])
    assert (faults.drop_webhook_rate, faults.fail_next, faults.fail_error) == (0.5, 2, "GPU on fire")
    assert faults.output_bytes_per_second is None
    for wrong in ("drop_webhook=1", "fail_next=two", "fail_next"):
        with pytest.raises(ValueError, match=r"fault setting|int"):
            faults.assign([wrong])
