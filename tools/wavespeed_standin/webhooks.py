"""Signing as WaveSpeed signs, written here again so the stand-in never trusts the code it tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any


def signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """``v3,<hex>``: HMAC-SHA256 keyed by the secret after ``whsec_``, as raw text, not base64."""
    key = secret.removeprefix("whsec_").encode("utf-8")
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v3,{digest}"


@dataclass(frozen=True)
class SignedMessage:
    """One webhook message: every copy and retry sends exactly these bytes and headers."""

    webhook_id: str
    timestamp: str
    body: bytes
    forged: bool
    headers: dict[str, str]


def sign_message(payload: dict[str, Any], secret: str, *, forged: bool) -> SignedMessage:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    webhook_id = str(uuid.uuid4())
    timestamp = str(int(time.time()))
    key = f"whsec_forged-{secrets.token_hex(8)}" if forged else secret
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature(key, webhook_id, timestamp, body),
    }
    return SignedMessage(webhook_id, timestamp, body, forged, headers)
