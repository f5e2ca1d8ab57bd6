"""WaveSpeed webhook authentication: HMAC-SHA256 over the raw bytes, in a time window, for one job.

The signature covers the body only, never the URL's query: what ties a delivery to a job is the
job's own unguessable token, carried in the webhook URL given to WaveSpeed for that job alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import parse_qs, urlencode

SIGNATURE_VERSION = "v3"
# Real deliveries are a few kilobytes (the prediction and its request body); API Gateway allows 10 MB.
MAX_BODY_BYTES = 1024 * 1024
# What a delivery id and timestamp may look like; anything else is refused before it is hashed or stored.
WEBHOOK_ID_PATTERN = re.compile(r"[!-~]{1,256}")
TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,12}")
# Job ids are a name and a digest; the bound keeps a forged one inside DynamoDB's key limits.
MAX_JOB_ID_BYTES = 256


class WebhookRefusal(Exception):
    """A delivery the callback does not act on; its class says what the sender is answered."""

    status_code: ClassVar[int] = 400
    answer: ClassVar[str] = "refused"


class WebhookRejected(WebhookRefusal):
    """Not provably from WaveSpeed (signature, time window, headers): nothing is looked up."""

    status_code = 401
    answer = "unauthorized"


class WebhookMalformed(WebhookRefusal):
    """Signed, but not a delivery the callback can read: a body that is no prediction, or a bad query."""

    status_code = 400
    answer = "unreadable delivery"


class WebhookNotForJob(WebhookRefusal):
    """Signed, but nothing an outsider cannot forge ties it to the job it names."""

    status_code = 403
    answer = "not for this job"


class WebhookTooLarge(WebhookRefusal):
    status_code = 413
    answer = "too large"


class WebhookSecretNotSet(WebhookRefusal):
    """The secret is still a placeholder: every delivery is refused with a 5xx, so WaveSpeed retries later."""

    status_code = 503
    answer = "not accepting webhooks yet"


@dataclass(frozen=True)
class WebhookTarget:
    """The job a delivery's URL names, and the token that proves the URL was made for it."""

    job_id: str
    token: str


def raw_body(body: str | None, is_base64_encoded: bool, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The bytes WaveSpeed signed, as API Gateway handed them over; never more than ``max_bytes``."""
    if body is None:
        return b""
    if is_base64_encoded:
        if len(body) > (max_bytes + 2) // 3 * 4:
            raise WebhookTooLarge(f"body is over {max_bytes} bytes")
        try:
            data = base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise WebhookRejected("body is flagged base64 but does not decode") from exc
        if base64.b64encode(data).decode("ascii") != body:
            # Extra padding or stray low bits: API Gateway never encodes that way.
            raise WebhookRejected("body is flagged base64 but is not canonical base64")
    else:
        if len(body) > max_bytes:
            raise WebhookTooLarge(f"body is over {max_bytes} bytes")
        data = body.encode("utf-8")
    if len(data) > max_bytes:
        raise WebhookTooLarge(f"body is over {max_bytes} bytes")
    return data


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
    if not WEBHOOK_ID_PATTERN.fullmatch(webhook_id):
        raise WebhookRejected("webhook-id is not 1-256 printable ASCII characters")
    if not TIMESTAMP_PATTERN.fullmatch(timestamp):
        raise WebhookRejected("webhook-timestamp is not a Unix time in seconds")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_seconds:
        raise WebhookRejected(f"webhook-timestamp is outside the {tolerance_seconds}s window")
    expected = expected_signature(secret, webhook_id, timestamp, body).encode()
    # A header may carry several space-separated signatures during a secret rotation.
    for candidate in signature_header.split():
        version, _, value = candidate.partition(",")
        candidate_digest = value.strip().lower().encode("utf-8", errors="replace")
        if version == SIGNATURE_VERSION and hmac.compare_digest(candidate_digest, expected):
            return webhook_id
    raise WebhookRejected("webhook-signature does not match")


def webhook_query(job_id: str, token: str) -> str:
    """The query of the webhook URL given to WaveSpeed for one job."""
    return urlencode({"job": job_id, "token": token})


def webhook_target(raw_query: str) -> WebhookTarget:
    """The job and token of a delivery's URL, each given exactly once; anything else is refused."""
    try:
        params = parse_qs(raw_query, keep_blank_values=True, strict_parsing=bool(raw_query), max_num_fields=20)
    except ValueError as exc:
        raise WebhookMalformed("the query string does not parse") from exc
    repeated = sorted(name for name, values in params.items() if len(values) > 1)
    if repeated:
        raise WebhookMalformed(f"query parameters given more than once: {', '.join(repeated)}")
    job_id = params.get("job", [""])[0]
    token = params.get("token", [""])[0]
    if not job_id or not token:
        raise WebhookNotForJob("the URL lacks its job or its token")
    if len(job_id.encode("utf-8")) > MAX_JOB_ID_BYTES:
        raise WebhookNotForJob("the job id is longer than any job's")
    return WebhookTarget(job_id=job_id, token=token)


def token_digest(token: str) -> str:
    """What the jobs table compares: equal digests leak nothing of the token through timing."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_token(stored: str, presented: str) -> bool:
    return hmac.compare_digest(stored.encode("utf-8"), presented.encode("utf-8"))
