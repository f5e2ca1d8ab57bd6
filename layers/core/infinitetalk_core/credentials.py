"""What counts as a real WaveSpeed credential: a deployed placeholder never does."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# What the template stores until ``infinitetalk setup`` replaces it; never accepted as a key.
PLACEHOLDER_SECRET = "not-set"  # noqa: S105 - the marker of a secret nobody has set yet
_KNOWN_PLACEHOLDERS = frozenset({"", PLACEHOLDER_SECRET, "replace-me", "changeme", "change-me", "none", "null", "todo"})
_API_KEY = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")
_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9._~+/=-]{16,512}")


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class CredentialNotSet(Exception):
    """A secret still holds a placeholder or something that cannot be a real credential."""


def require_api_key(value: str) -> str:
    """The API key, or ``CredentialNotSet`` when it is a placeholder: never send a placeholder to WaveSpeed."""
    if value.strip().lower() in _KNOWN_PLACEHOLDERS or not _API_KEY.fullmatch(value):
        raise CredentialNotSet(
            "the WaveSpeed API key is not set (the secret holds a placeholder); run `infinitetalk setup --stack NAME`"
        )
    return value


def require_webhook_secret(value: str) -> str:
    """The webhook secret, or ``CredentialNotSet``: only a ``whsec_`` secret from WaveSpeed verifies anything."""
    if not _WEBHOOK_SECRET.fullmatch(value):
        raise CredentialNotSet(
            "the WaveSpeed webhook secret is not set (it must be the whsec_... value of GET /webhook/secret); "
            "run `infinitetalk setup --stack NAME`"
        )
    return value


def api_key_may_go_to(url: str) -> bool:
    """The API key travels only over https, or as plain http to this very machine."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return (parts.scheme == "https" and bool(host)) or (parts.scheme == "http" and host in LOOPBACK_HOSTS)
