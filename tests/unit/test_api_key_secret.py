"""The API key as the functions read it: a placeholder, or anything that cannot be a key, is never handed out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from aws_lambda_powertools.utilities.parameters import GetParameterError, SecretsProvider

from infinitetalk_core.credentials import PLACEHOLDER_SECRET, CredentialNotSet, require_api_key
from infinitetalk_core.pipeline import Pipeline, checked_secret, secret_reader
from infinitetalk_core.submit_states import api_key_missing

REAL_KEY = "a-real-looking-wavespeed-key-0123456789"


class StoredSecret:
    """Secrets Manager as the reader sees it: one stored value, or a failed read."""

    def __init__(self, value: str | bytes | Exception) -> None:
        self.value = value

    def get(self, name: str, max_age: int | None = None, **_: Any) -> str | bytes:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def api_key(value: str | bytes | Exception) -> str:
    read = secret_reader(cast(SecretsProvider, StoredSecret(value)), "api-key", 300)
    return checked_secret(read, require_api_key)()


@pytest.mark.parametrize(
    "stored",
    [
        PLACEHOLDER_SECRET,
        "replace-me",
        "",
        "  \n",
        "short",
        '{"api_key": "not-set"}',
        '{"one": "' + REAL_KEY + '", "two": "' + REAL_KEY + '"}',
        "{not json at all",
        "{}",
        '["' + REAL_KEY + '"]',
    ],
)
def test_a_placeholder_or_unusable_secret_is_refused(stored: str) -> None:
    with pytest.raises(CredentialNotSet, match="infinitetalk setup"):
        api_key(stored)


@pytest.mark.parametrize(
    "stored",
    [REAL_KEY, f"  {REAL_KEY}\n", REAL_KEY.encode(), f'{{"WAVESPEED_API_KEY": "{REAL_KEY}"}}'],
    ids=["plain", "padded", "binary", "console-json"],
)
def test_a_real_key_is_read_as_stored(stored: str | bytes) -> None:
    assert api_key(stored) == REAL_KEY


def pipeline_reading(stored: str | Exception) -> Pipeline:
    read = secret_reader(cast(SecretsProvider, StoredSecret(stored)), "api-key", 300)
    return cast(Pipeline, SimpleNamespace(api_key=checked_secret(read, require_api_key)))


def test_only_a_placeholder_makes_a_job_wait_for_the_key() -> None:
    assert api_key_missing(pipeline_reading(PLACEHOLDER_SECRET)) is True
    assert api_key_missing(pipeline_reading(REAL_KEY)) is False
    # A failed read says nothing about the key: the submit's own retries deal with it.
    assert api_key_missing(pipeline_reading(GetParameterError("throttled"))) is False
