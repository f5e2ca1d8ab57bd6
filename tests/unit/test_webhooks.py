import base64
import hashlib
import hmac
import json
import string
from datetime import UTC, datetime

import pytest

from infinitetalk_core.callbacks import read_prediction
from infinitetalk_core.models import Job, JobStatus
from infinitetalk_core.webhooks import (
    MAX_BODY_BYTES,
    WebhookMalformed,
    WebhookNotForJob,
    WebhookRejected,
    WebhookTarget,
    WebhookTooLarge,
    raw_body,
    same_token,
    token_digest,
    verify_webhook,
    webhook_query,
    webhook_target,
)

SECRET = "whsec_c2VjcmV0LXRleHQ"
BODY = json.dumps({"id": "abc", "status": "completed", "outputs": ["https://x/y.mp4"]}).encode()
NOW = 1_790_000_000
URLSAFE = set(string.ascii_letters + string.digits + "-_")


def sign(body: bytes, webhook_id: str = "msg_1", timestamp: int = NOW, secret: str = SECRET) -> dict[str, str]:
    # Independent of the code under test: the documented recipe, spelled out.
    key = secret[len("whsec_") :].encode()
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v3,{digest}"}


def test_a_genuine_delivery_is_accepted_and_named() -> None:
    assert verify_webhook(sign(BODY), BODY, SECRET, now=NOW + 10) == "msg_1"


def test_header_names_are_case_insensitive() -> None:
    headers = {k.title(): v for k, v in sign(BODY).items()}
    assert verify_webhook(headers, BODY, SECRET, now=NOW) == "msg_1"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b + b" "),  # body changed after signing
        lambda h, b: ({**h, "webhook-id": "msg_2"}, b),
        lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b),
        lambda h, b: (sign(b, secret="whsec_other"), b),
        lambda h, b: ({**h, "webhook-signature": h["webhook-signature"].replace("v3,", "v1,")}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
        lambda h, b: ({**h, "webhook-signature": "v3,\u00e9" * 32}, b),  # not even ASCII: still a 401, not a crash
    ],
)
def test_forged_or_altered_deliveries_are_rejected(tamper) -> None:  # type: ignore[no-untyped-def]
    headers, body = tamper(sign(BODY), BODY)
    with pytest.raises(WebhookRejected):
        verify_webhook(headers, body, SECRET, now=NOW)


@pytest.mark.parametrize("offset", [301, -301, 10_000])
def test_stale_or_future_timestamps_are_rejected(offset: int) -> None:
    with pytest.raises(WebhookRejected, match="window"):
        verify_webhook(sign(BODY), BODY, SECRET, now=NOW + offset)


def test_the_window_edge_is_inclusive() -> None:
    assert verify_webhook(sign(BODY), BODY, SECRET, now=NOW + 300) == "msg_1"


def test_the_secret_is_used_as_text_not_base64_decoded() -> None:
    wrong_key = base64.b64decode(SECRET[len("whsec_") :] + "==")
    digest = hmac.new(wrong_key, f"msg_1.{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    headers = {**sign(BODY), "webhook-signature": f"v3,{digest}"}
    with pytest.raises(WebhookRejected):
        verify_webhook(headers, BODY, SECRET, now=NOW)


def test_any_of_several_signatures_may_match() -> None:
    good = sign(BODY)["webhook-signature"]
    headers = {**sign(BODY), "webhook-signature": f"v3,deadbeef {good}"}
    assert verify_webhook(headers, BODY, SECRET, now=NOW) == "msg_1"


def test_base64_bodies_from_api_gateway_are_verified_on_the_original_bytes() -> None:
    body_with_unicode = json.dumps({"id": "t", "status": "failed", "error": "visage non détecté"}).encode()
    encoded = base64.b64encode(body_with_unicode).decode()
    assert raw_body(encoded, True) == body_with_unicode
    assert verify_webhook(sign(body_with_unicode), raw_body(encoded, True), SECRET, now=NOW) == "msg_1"
    assert raw_body(body_with_unicode.decode(), False) == body_with_unicode


def test_a_body_flagged_base64_that_is_not_is_rejected() -> None:
    with pytest.raises(WebhookRejected):
        raw_body("not base64 at all!", True)


# ---- shapes refused before anything is hashed, looked up or stored ------------------------------


@pytest.mark.parametrize("timestamp", [f"+{NOW}", f" {NOW}", f"{NOW} ", "1_790_000_000", f"{NOW}.0", "-1", ""])
def test_a_timestamp_that_is_not_plain_digits_is_rejected_even_when_signed(timestamp: str) -> None:
    headers = {**sign(BODY), "webhook-timestamp": timestamp}
    key = SECRET[len("whsec_") :].encode()
    digest = hmac.new(key, f"msg_1.{timestamp}.".encode() + BODY, hashlib.sha256).hexdigest()
    headers["webhook-signature"] = f"v3,{digest}"
    with pytest.raises(WebhookRejected):
        verify_webhook(headers, BODY, SECRET, now=NOW)


@pytest.mark.parametrize("webhook_id", ["m" * 257, "msg 1", "msg\n1", "msg_\u00e9"])
def test_a_webhook_id_that_could_not_be_stored_is_rejected_even_when_signed(webhook_id: str) -> None:
    with pytest.raises(WebhookRejected):
        verify_webhook(sign(BODY, webhook_id=webhook_id), BODY, SECRET, now=NOW)


def test_the_longest_allowed_webhook_id_is_accepted() -> None:
    webhook_id = "m" * 256
    assert verify_webhook(sign(BODY, webhook_id=webhook_id), BODY, SECRET, now=NOW) == webhook_id


def test_bodies_up_to_the_cap_are_read_and_larger_ones_refused_plain_or_base64() -> None:
    limit = 1000
    assert raw_body("x" * limit, False, max_bytes=limit) == b"x" * limit
    assert raw_body(base64.b64encode(b"x" * limit).decode(), True, max_bytes=limit) == b"x" * limit
    with pytest.raises(WebhookTooLarge):
        raw_body("x" * (limit + 1), False, max_bytes=limit)
    with pytest.raises(WebhookTooLarge):
        raw_body(base64.b64encode(b"x" * (limit + 1)).decode(), True, max_bytes=limit)
    with pytest.raises(WebhookTooLarge):
        raw_body("\u00e9" * limit, False, max_bytes=limit)  # 1000 characters, 2000 bytes
    assert MAX_BODY_BYTES == 1024 * 1024


@pytest.mark.parametrize("encoded", ["YWJ", "YW Jj", "YWJj\n", "YWJj=", "YR==", "Y*Jj", "-_-_"])
def test_base64_with_bad_padding_or_foreign_characters_is_rejected(encoded: str) -> None:
    with pytest.raises(WebhookRejected):
        raw_body(encoded, True)


# ---- the URL's job and token -------------------------------------------------------------------


def test_the_webhook_query_names_the_job_and_its_token_and_reads_back() -> None:
    query = webhook_query("anchor-0123456789ab", "tok-EN_42")
    assert query == "job=anchor-0123456789ab&token=tok-EN_42"
    assert webhook_target(query) == WebhookTarget(job_id="anchor-0123456789ab", token="tok-EN_42")


@pytest.mark.parametrize(
    "query",
    [
        "job=a&job=b&token=t",
        "job=a&token=t&token=u",
        "job=a&token=t&token=t",
        "job=a&&token=t",
        "job=a&token",
        "&".join(f"p{i}=1" for i in range(30)) + "&job=a&token=t",
    ],
)
def test_a_query_repeating_a_parameter_or_not_parsing_is_malformed(query: str) -> None:
    with pytest.raises(WebhookMalformed):
        webhook_target(query)


def test_a_semicolon_separates_nothing_so_it_cannot_smuggle_a_second_token() -> None:
    assert webhook_target("job=a;token=t&token=u") == WebhookTarget(job_id="a;token=t", token="u")


@pytest.mark.parametrize(
    "query", ["", "job=a", "token=t", "job=&token=t", "job=a&token=", "job=" + "a" * 257 + "&token=t"]
)
def test_a_query_without_a_job_and_its_token_is_not_for_any_job(query: str) -> None:
    with pytest.raises(WebhookNotForJob):
        webhook_target(query)


def test_tokens_are_compared_whole_and_stored_only_as_a_digest_in_conditions() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd") and not same_token("abc", "ab") and not same_token("abc", "ABC")
    assert token_digest("abc") == hashlib.sha256(b"abc").hexdigest() != token_digest("abd")


def test_every_job_gets_its_own_unguessable_token_which_survives_storage_and_stays_out_of_repr() -> None:
    now = datetime.now(UTC)
    jobs = [
        Job(job_id=f"j-{i}", job_name="j", status=JobStatus.RECEIVED, status_since=now, created_at=now)
        for i in range(50)
    ]
    tokens = {job.webhook_token for job in jobs}
    assert len(tokens) == 50
    assert all(len(token) >= 43 and set(token) <= URLSAFE for token in tokens)
    stored = Job.model_validate(jobs[0].model_dump(mode="json"))
    assert stored.webhook_token == jobs[0].webhook_token
    assert jobs[0].webhook_token not in repr(jobs[0]) and jobs[0].webhook_token not in str(jobs[0])


# ---- the body's task id ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task_id",
    ["../../webhook/secret#", "", "A" * 32, "a" * 31, "a" * 33, "g" * 32, "a" * 31 + "\n", "0" * 31 + "\u0660", 12345],
)
def test_a_task_id_without_wavespeeds_shape_is_unreadable(task_id: object) -> None:
    body = json.dumps({"id": task_id, "status": "completed", "outputs": []}).encode()
    with pytest.raises(WebhookMalformed):
        read_prediction(body)


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"{}", b'{"id": "' + b"a" * 32 + b'", "status": "odd"}'])
def test_a_body_that_is_no_prediction_is_unreadable(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        read_prediction(body)


def test_a_well_formed_prediction_is_read() -> None:
    body = json.dumps({"id": "0123456789abcdef" * 2, "status": "completed", "outputs": ["https://x/y.mp4"]}).encode()
    assert read_prediction(body).id == "0123456789abcdef" * 2
