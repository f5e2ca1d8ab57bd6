"""Submissions spread to a rate that every submit instance shares, so WaveSpeed's limit is not met with 429s.

Time is cut into slots of ``1 / SUBMIT_RATE_PER_SECOND`` seconds. Each POST takes the next free
slot from one counter in the jobs table (``RATE#submit``) and waits for it to begin, so the stack as
a whole never sends more than the rate, however many instances run. Between them, the event source's
``MaximumConcurrency`` (``SubmitConcurrency``) bounds how many wait at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from .wavespeed import NoTaskCreated

if TYPE_CHECKING:
    from .pipeline import Pipeline

SUBMIT_RATE = "submit"
# A slot further off than this is given back to the queue rather than waited for.
MAX_SLOT_WAIT_SECONDS = 30.0


def wait_for_submit_slot(pipeline: Pipeline, time_left: Callable[[], float] | None = None) -> float:
    """Wait until this submission's slot begins; returns the seconds waited.

    Raises ``NoTaskCreated`` (nothing was sent) when the slot is too far off for this invocation.
    """
    settings = pipeline.settings
    rate = settings.submit_rate_per_second
    if rate <= 0:
        return 0.0
    now = pipeline.clock().timestamp()
    slot = pipeline.jobs.take_rate_slot(SUBMIT_RATE, math.floor(now * rate))
    wait = slot / rate - now
    if wait <= 0:
        return 0.0
    if wait > MAX_SLOT_WAIT_SECONDS or (time_left is not None and time_left() < wait + settings.http_timeout_seconds):
        raise NoTaskCreated(
            f"the submission rate ({rate:g} per second, SubmitRatePerSecond) has no free slot for {wait:.1f} s",
            retry_after=wait,
        )
    pipeline.sleep(wait)
    return wait
