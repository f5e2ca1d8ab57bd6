"""Configuration read once per cold start from the environment the template sets."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import cache

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_WAVESPEED_URL = "https://api.wavespeed.ai/api/v3"


class Settings(BaseModel):
    """Every knob of the pipeline; field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    media_bucket: str = Field(alias="MEDIA_BUCKET")
    jobs_table: str = Field(alias="JOBS_TABLE")
    ledger_table: str = Field(alias="LEDGER_TABLE")
    submit_queue_url: str = Field(alias="SUBMIT_QUEUE_URL")
    fetch_queue_url: str = Field(alias="FETCH_QUEUE_URL")
    event_bus_name: str = Field(alias="EVENT_BUS_NAME")
    api_key_secret_id: str = Field(alias="API_KEY_SECRET_ID")
    webhook_secret_id: str = Field(alias="WEBHOOK_SECRET_ID")
    webhook_url: str = Field(default="", alias="WEBHOOK_URL")
    wavespeed_base_url: str = Field(default=DEFAULT_WAVESPEED_URL, alias="WAVESPEED_BASE_URL")
    monthly_budget_usd: Decimal = Field(default=Decimal(0), ge=0, alias="MONTHLY_BUDGET_USD")
    billing_rule_set: str = Field(default="seeds-output-5s", alias="BILLING_RULE_SET")
    input_delivery: str = Field(
        default="presigned-url", alias="INPUT_DELIVERY", pattern="^(presigned-url|wavespeed-upload)$"
    )
    presign_expiry_seconds: int = Field(default=86_400, ge=60, le=604_800, alias="PRESIGN_EXPIRY_SECONDS")
    folder_settle_seconds: int = Field(default=30, ge=0, le=900, alias="FOLDER_SETTLE_SECONDS")
    webhook_overdue_seconds: int = Field(default=1_800, ge=1, alias="WEBHOOK_OVERDUE_SECONDS")
    submit_grace_seconds: int = Field(default=3_600, ge=1, alias="SUBMIT_GRACE_SECONDS")
    submit_stall_seconds: int = Field(default=180, ge=1, alias="SUBMIT_STALL_SECONDS")
    webhook_tolerance_seconds: int = Field(default=300, ge=1, alias="WEBHOOK_TOLERANCE_SECONDS")
    secret_max_age_seconds: int = Field(default=300, ge=0, alias="SECRET_MAX_AGE_SECONDS")
    http_timeout_seconds: float = Field(default=30.0, gt=0, alias="HTTP_TIMEOUT_SECONDS")
    submit_attempts: int = Field(default=4, ge=1, le=10, alias="SUBMIT_ATTEMPTS")
    retry_base_seconds: float = Field(default=1.0, ge=0, alias="RETRY_BASE_SECONDS")

    @property
    def budget_micros(self) -> int:
        """The monthly budget in micro-dollars; 0 means no budget."""
        return int(self.monthly_budget_usd * 1_000_000)


@cache
def get_settings() -> Settings:
    """Parse the environment once; tests call ``get_settings.cache_clear()`` after changing it."""
    return Settings.model_validate(dict(os.environ))
