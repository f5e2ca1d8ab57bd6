"""Fault knobs a test turns at any time to make WaveSpeed's rare behaviours happen on demand."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Literal, get_type_hints

from pydantic import TypeAdapter

FaultName = Literal[
    "submit_429",
    "submit_500",
    "submit_500_after_create",
    "result_500",
    "fail",
    "drop_webhook",
    "bad_signature",
    "empty_outputs",
    "history_500",
]

SEVEN_DAYS_SECONDS = 7 * 24 * 3600.0


@dataclass
class Faults:
    """Every field defaults to "no fault".

    A ``*_next`` counter forces the fault for that many events and is decremented as used; a
    ``*_rate`` adds it at random, from a generator seeded by ``seed`` so a run can be repeated.
    """

    seed: int = 0

    submit_429_next: int = 0
    submit_429_rate: float = 0.0
    retry_after_seconds: float = 0.0

    submit_500_next: int = 0
    submit_500_rate: float = 0.0

    submit_500_after_create_next: int = 0
    submit_500_after_create_rate: float = 0.0

    result_500_next: int = 0
    result_500_rate: float = 0.0

    fail_next: int = 0
    fail_rate: float = 0.0
    fail_error: str = "Inference failed"

    drop_webhook_next: int = 0
    drop_webhook_rate: float = 0.0
    webhook_copies: int = 1
    webhook_delay_seconds: float = 0.0

    bad_signature_next: int = 0
    bad_signature_rate: float = 0.0

    output_bytes_per_second: float | None = None
    # Completed with an empty ``outputs`` list; an output answered by a redirect; an output padded
    # with zero bytes and sent chunked, without a Content-Length.
    empty_outputs_next: int = 0
    empty_outputs_rate: float = 0.0
    output_redirect_url: str | None = None
    output_padding_bytes: int = 0

    # The prediction history: whole reads answering 500, pages from this number on answering 500
    # (a read that breaks half-way; 0 = never), and how long a new task takes to appear in it.
    history_500_next: int = 0
    history_500_rate: float = 0.0
    history_500_from_page: int = 0
    history_lag_seconds: float = 0.0

    # Simulated processing time per second of output (None: the stand-in's own setting), so a run
    # can show real pacing (WaveSpeed takes roughly 10-30 s per second of video).
    seconds_per_output_second: float | None = None
    # Results, outputs, history entries and uploads are deleted this long after they were made
    # (WaveSpeed keeps them 7 days); a deleted result answers 404.
    retention_seconds: float = SEVEN_DAYS_SECONDS

    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _rng: random.Random | None = field(default=None, init=False, repr=False, compare=False)
    _rng_seed: int | None = field(default=None, init=False, repr=False, compare=False)

    def draw(self, name: FaultName) -> bool:
        """Whether this event gets the fault: a pending ``*_next`` first, then the rate.

        Drawn under a lock because the HTTP threads and the workers consume the same counters.
        """
        with self._lock:
            pending = int(getattr(self, f"{name}_next"))
            if pending > 0:
                setattr(self, f"{name}_next", pending - 1)
                return True
            rate = float(getattr(self, f"{name}_rate"))
            if rate <= 0:
                return False
            return self._random() < rate

    def _random(self) -> float:
        # A test may change ``seed`` mid-run; the sequence restarts from the new seed.
        if self._rng is None or self._rng_seed != self.seed:
            self._rng = random.Random(self.seed)
            self._rng_seed = self.seed
        return self._rng.random()

    def assign(self, assignments: Iterable[str]) -> None:
        """Set knobs from ``name=value`` text, as given on a command line; unknown names are errors."""
        hints = get_type_hints(Faults)
        knobs = {item.name for item in fields(self) if item.init}
        for assignment in assignments:
            name, separator, text = assignment.partition("=")
            name = name.strip()
            if not separator or name not in knobs:
                raise ValueError(f"not a fault setting: {assignment!r}; use one of {', '.join(sorted(knobs))}")
            value = TypeAdapter(hints[name]).validate_python(None if text.lower() == "none" else text.strip())
            with self._lock:
                setattr(self, name, value)

    def reset(self) -> None:
        """Back to no faults, in place, so references a test holds stay valid."""
        fresh = Faults()
        with self._lock:
            for item in fields(self):
                if item.init:
                    setattr(self, item.name, getattr(fresh, item.name))
            self._rng = None
            self._rng_seed = None
