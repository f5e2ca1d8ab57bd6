import base64
import hashlib
import hmac
import json

import pytest

from infinitetalk_core.webhooks import WebhookRejected, raw_body, verify_webhook

SECRET = "whsec_c2VjcmV0LXRleHQ"
BODY = json.dumps({"id": "abc", "status": "completed", "outputs": ["https://x/y.mp4"]}).encode()
NOW = 1_790_000_000


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
