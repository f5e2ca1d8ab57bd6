"""The submission pace: a slot per POST, waited for, or given back when it is too far off."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from infinitetalk_core.pacing import MAX_SLOT_WAIT_SECONDS, SUBMIT_RATE, wait_for_submit_slot
from infinitetalk_core.pipeline import Pipeline
from infinitetalk_core.settings import Settings
from infinitetalk_core.wavespeed import NoTaskCreated
from tests.unit.test_settings import REQUIRED

NOW = 1_800_000_000.25


class Slots:
    """A counter of slots as the jobs table keeps it: the next free one, never behind ``current``."""

    def __init__(self, queued: int = 0) -> None:
        self.queued = queued
        self.asked: list[tuple[str, int]] = []
        self.next_slot: int | None = None

    def take_rate_slot(self, name: str, current: int) -> int:
        self.asked.append((name, current))
        slot = current if self.next_slot is None or self.next_slot <= current else self.next_slot
        slot += self.queued
        self.queued = 0
        self.next_slot = slot + 1
        return slot


def pipeline(rate: float, slots: Slots, slept: list[float], now: float = NOW) -> Pipeline:
    settings = Settings.model_validate({**REQUIRED, "SUBMIT_RATE_PER_SECOND": str(rate)})
    fake: Any = type("FakePipeline", (), {})()
    fake.settings = settings
    fake.jobs = slots
    fake.clock = lambda: datetime.fromtimestamp(now, UTC)
    fake.sleep = slept.append
    return cast(Pipeline, fake)


def test_no_rate_takes_no_slot_and_never_waits() -> None:
    slots, slept = Slots(), list[float]()
    assert wait_for_submit_slot(pipeline(0, slots, slept)) == 0.0
    assert slots.asked == [] and slept == []


def test_the_slot_of_now_is_taken_without_waiting() -> None:
    slots, slept = Slots(), list[float]()
    assert wait_for_submit_slot(pipeline(4, slots, slept)) == 0.0
    assert slots.asked == [(SUBMIT_RATE, int(NOW * 4))]
    assert slept == []


def test_a_slot_ahead_is_waited_for_until_it_begins() -> None:
    slots, slept = Slots(queued=3), list[float]()
    waited = wait_for_submit_slot(pipeline(2, slots, slept))
    slot = int(NOW * 2) + 3
    assert waited == pytest.approx(slot / 2 - NOW)
    assert slept == [pytest.approx(slot / 2 - NOW)]


def test_a_slot_too_far_off_goes_back_to_the_queue_with_its_wait() -> None:
    slots, slept = Slots(queued=int(MAX_SLOT_WAIT_SECONDS * 2) + 10), list[float]()
    with pytest.raises(NoTaskCreated, match="SubmitRatePerSecond") as caught:
        wait_for_submit_slot(pipeline(2, slots, slept))
    assert caught.value.retry_after is not None and caught.value.retry_after > MAX_SLOT_WAIT_SECONDS
    assert slept == []


def test_a_slot_past_what_the_invocation_has_left_is_given_back() -> None:
    slots, slept = Slots(queued=10), list[float]()
    with pytest.raises(NoTaskCreated):
        wait_for_submit_slot(pipeline(2, slots, slept), time_left=lambda: 3.0)
    assert slept == []


@pytest.mark.parametrize("rate", ["-1", "1001", "fast"])
def test_a_rate_that_makes_no_sense_is_refused_at_the_cold_start(rate: str) -> None:
    with pytest.raises(ValueError, match="SUBMIT_RATE_PER_SECOND"):
        Settings.model_validate({**REQUIRED, "SUBMIT_RATE_PER_SECOND": rate})
