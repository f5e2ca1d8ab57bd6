"""Billing rules as data: which duration is billed, how it is rounded, the minimum, the rates."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .models import ModelName, Resolution, SpeakerOrder

LATEST = "latest"


class BillingRuleSet(BaseModel):
    """One published version of the billing rules; ledger entries name the ``id`` they used."""

    model_config = ConfigDict(frozen=True)

    id: str
    description: str = ""
    effective_from: date
    price_per_5s_usd: dict[Resolution, Decimal]
    billed_duration: Literal["output", "input"]
    minimum_seconds: int = Field(ge=0)
    rounding: Literal["ceil"] = "ceil"
    charge_failed_jobs: bool = False

    def rate_micros_per_second(self, resolution: Resolution) -> int:
        per_second = self.price_per_5s_usd[resolution] / 5 * 1_000_000
        if per_second != per_second.to_integral_value():
            raise ValueError(f"rule set {self.id}: {resolution} rate is not a whole number of micro-dollars")
        return int(per_second)

    def billed_seconds(self, seconds: Decimal) -> int:
        """Whole seconds billed for a measured length: rounded up, never below the minimum."""
        return max(self.minimum_seconds, math.ceil(seconds))

    def charge(self, resolution: Resolution, seconds: Decimal) -> Charge:
        billed = self.billed_seconds(seconds)
        rate = self.rate_micros_per_second(resolution)
        return Charge(rule_set=self.id, billed_seconds=billed, rate_micros_per_second=rate, micros=billed * rate)

    def billable_seconds(self, *, input_seconds: Decimal, output_seconds: Decimal | None) -> Decimal:
        """The length these rules bill: the delivered video's, or the input media's."""
        if self.billed_duration == "output" and output_seconds is not None:
            return output_seconds
        return input_seconds


@dataclass(frozen=True)
class Charge:
    rule_set: str
    billed_seconds: int
    rate_micros_per_second: int
    micros: int


class RuleBook(BaseModel):
    rule_sets: list[BillingRuleSet]

    def select(self, name: str, on: date) -> BillingRuleSet:
        """The named rule set, or with ``latest`` the newest one in effect on ``on``."""
        if name == LATEST:
            in_effect = [r for r in self.rule_sets if r.effective_from <= on]
            if not in_effect:
                raise LookupError(f"no billing rule set is in effect on {on}")
            return max(in_effect, key=lambda r: r.effective_from)
        for rule_set in self.rule_sets:
            if rule_set.id == name:
                return rule_set
        known = ", ".join(r.id for r in self.rule_sets)
        raise LookupError(f"unknown billing rule set {name!r}; known: {known}, or {LATEST!r}")

    def get(self, rule_set_id: str) -> BillingRuleSet:
        return self.select(rule_set_id, date.max)


@cache
def rule_book() -> RuleBook:
    text = resources.files(__package__).joinpath("billing_rules.json").read_text(encoding="utf-8")
    return RuleBook.model_validate(json.loads(text))


def output_seconds_for(model: ModelName, audio_seconds: dict[str, Decimal], order: SpeakerOrder | None) -> Decimal:
    """The length WaveSpeed will render: the audio's, or for two speakers by the ``order`` rule."""
    if model is ModelName.MULTI:
        left, right = audio_seconds["left_audio"], audio_seconds["right_audio"]
        if (order or SpeakerOrder.MEANWHILE) is SpeakerOrder.MEANWHILE:
            return max(left, right)
        return left + right
    return audio_seconds["audio"]
