from decimal import Decimal

import pytest
from pydantic import ValidationError

from infinitetalk_core.settings import DEFAULT_WAVESPEED_URL, Settings, get_settings

REQUIRED = {
    "MEDIA_BUCKET": "b",
    "JOBS_TABLE": "j",
    "LEDGER_TABLE": "l",
    "SUBMIT_QUEUE_URL": "q1",
    "FETCH_QUEUE_URL": "q2",
    "EVENT_BUS_NAME": "bus",
    "API_KEY_SECRET_ID": "s1",
    "WEBHOOK_SECRET_ID": "s2",
}


def test_settings_parse_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**REQUIRED, "MONTHLY_BUDGET_USD": "12.5"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    first = get_settings()
    monkeypatch.setenv("MONTHLY_BUDGET_USD", "99")
    assert get_settings() is first
    assert first.monthly_budget_usd == Decimal("12.5")
    assert first.budget_micros == 12_500_000
    assert first.wavespeed_base_url == DEFAULT_WAVESPEED_URL
    get_settings.cache_clear()


def test_missing_and_bad_values_are_named() -> None:
    with pytest.raises(ValidationError, match="JOBS_TABLE"):
        Settings.model_validate({k: v for k, v in REQUIRED.items() if k != "JOBS_TABLE"})
    with pytest.raises(ValidationError, match="INPUT_DELIVERY"):
        Settings.model_validate({**REQUIRED, "INPUT_DELIVERY": "email"})


@pytest.mark.parametrize(
    "url",
    ["http://api.wavespeed.ai/api/v3", "ftp://api.wavespeed.ai", "https://", "http://10.0.0.5:8787", "file:///etc"],
)
def test_the_api_key_is_never_sent_in_the_clear_to_another_machine(url: str) -> None:
    with pytest.raises(ValidationError, match="the API key goes there"):
        Settings.model_validate({**REQUIRED, "WAVESPEED_BASE_URL": url})


@pytest.mark.parametrize(
    "url", ["https://api.wavespeed.ai/api/v3", "http://127.0.0.1:8787/api/v3", "http://localhost:1"]
)
def test_https_or_this_machine_is_a_place_for_the_key(url: str) -> None:
    assert Settings.model_validate({**REQUIRED, "WAVESPEED_BASE_URL": url}).wavespeed_base_url == url
