"""Configuration read once per cold start from the environment the template sets."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .credentials import api_key_may_go_to
from .output_hosts import DEFAULT_OUTPUT_HOSTS, DEFAULT_OUTPUT_MAX_BYTES, parse_output_hosts

if TYPE_CHECKING:
    from .outbound import OutputPolicy

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
    # Reads of a finished task's result within one fetch, while they fail in a passing way.
    result_attempts: int = Field(default=3, ge=1, le=10, alias="RESULT_ATTEMPTS")
    retry_base_seconds: float = Field(default=1.0, ge=0, alias="RETRY_BASE_SECONDS")
    # Recovery of lost submit answers through WaveSpeed's prediction history: how long after its
    # creation a task is trusted to be listed, the clock margin around a submission's span, how
    # far back the history reaches, its page size, and how often a proven-empty submission is sent again.
    history_lag_seconds: int = Field(default=600, ge=0, alias="HISTORY_LAG_SECONDS")
    history_clock_skew_seconds: float = Field(default=30.0, ge=0, alias="HISTORY_CLOCK_SKEW_SECONDS")
    history_coverage_seconds: int = Field(default=7 * 24 * 3600, ge=3600, alias="HISTORY_COVERAGE_SECONDS")
    history_page_size: int = Field(default=100, ge=1, le=100, alias="HISTORY_PAGE_SIZE")
    # Submissions per second across every submit instance (``pacing``); 0 sends them as fast as they come.
    submit_rate_per_second: float = Field(default=0.0, ge=0, le=1000, alias="SUBMIT_RATE_PER_SECOND")
    max_resubmissions: int = Field(default=2, ge=0, le=10, alias="MAX_RESUBMISSIONS")
    # A submitted job whose result cannot be read for this long ends, its estimate kept as possibly owed.
    result_unreadable_limit_seconds: int = Field(default=86_400, ge=1, alias="RESULT_UNREADABLE_LIMIT_SECONDS")
    # A reported job whose fetch keeps failing (5xx outputs, a crash each time) ends after this long.
    fetch_give_up_seconds: int = Field(default=86_400, ge=60, alias="FETCH_GIVE_UP_SECONDS")
    # SNS topic told of budget alerts (and, in the template, of dead letters and errors); empty: none.
    alarm_topic_arn: str = Field(default="", alias="ALARM_TOPIC_ARN")
    # Where outputs may be downloaded from: host names (https only), *.domain, or exact origins.
    output_hosts: str = Field(default=DEFAULT_OUTPUT_HOSTS, alias="OUTPUT_HOSTS")
    output_max_bytes: int = Field(default=DEFAULT_OUTPUT_MAX_BYTES, ge=1, alias="OUTPUT_MAX_BYTES")

    @field_validator("wavespeed_base_url")
    @classmethod
    def _base_url_keeps_the_key_safe(cls, value: str) -> str:
        if not api_key_may_go_to(value):
            raise ValueError("must be an https URL (plain http only to 127.0.0.1 or localhost): the API key goes there")
        return value

    @field_validator("output_hosts")
    @classmethod
    def _output_hosts_parse(cls, value: str) -> str:
        parse_output_hosts(value)
        return value

    @property
    def budget_micros(self) -> int:
        """The monthly budget in micro-dollars; 0 means no budget."""
        return int(self.monthly_budget_usd * 1_000_000)

    @property
    def output_policy(self) -> OutputPolicy:
        """The download policy for WaveSpeed's outputs (built by the fetch and submit only: it needs httpx)."""
        from .outbound import OutputPolicy

        return OutputPolicy.parse(self.output_hosts, self.output_max_bytes)


@cache
def get_settings() -> Settings:
    """Parse the environment once; tests call ``get_settings.cache_clear()`` after changing it."""
    return Settings.model_validate(dict(os.environ))
