"""WaveSpeed webhook authentication: HMAC-SHA256 over the raw bytes, in a time window."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_VERSION = "v3"


class WebhookRejected(Exception):
    """The delivery is not provably from WaveSpeed; answer 401 and change nothing."""


def raw_body(body: str | None, is_base64_encoded: bool) -> bytes:
    """The bytes WaveSpeed signed, as API Gateway handed them over."""
    if body is None:
        return b""
    if is_base64_encoded:
        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise WebhookRejected("body is flagged base64 but does not decode") from exc
    return body.encode("utf-8")


def signing_key(secret: str) -> bytes:
    """WaveSpeed uses the secret after ``whsec_`` as raw text, not base64-decoded."""
    return secret.removeprefix("whsec_").encode("utf-8")


def expected_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return hmac.new(signing_key(secret), message, hashlib.sha256).hexdigest()


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> str:
    """Check the signature and freshness of one delivery; returns its ``webhook-id``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "")
    signature_header = lowered.get("webhook-signature", "")
    if not webhook_id or not timestamp or not signature_header:
        raise WebhookRejected("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise WebhookRejected("webhook-timestamp is not a Unix time") from exc
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        raise WebhookRejected(f"webhook-timestamp is outside the {tolerance_seconds}s window")
    expected = expected_signature(secret, webhook_id, timestamp, body)
    # A header may carry several space-separated signatures during a secret rotation.
    for candidate in signature_header.split():
        version, _, value = candidate.partition(",")
        candidate_digest = value.strip().lower().encode("utf-8", errors="replace")
        if version == SIGNATURE_VERSION and hmac.compare_digest(candidate_digest, expected.encode()):
            return webhook_id
    raise WebhookRejected("webhook-signature does not match")
