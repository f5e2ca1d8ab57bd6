"""One local stack per test module: moto's server, the WaveSpeed stand-in, the template's functions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from local_stack import LocalStack, StackOptions


@contextmanager
def start_stack(
    environment: Mapping[str, str] | None = None,
    parameters: Mapping[str, str] | None = None,
    **standin: Any,
) -> Iterator[LocalStack]:
    """Environment overrides use the functions' variable names; parameters the template's names."""
    options = StackOptions(
        environment=dict(environment or {}),
        parameters={"FolderSettleSeconds": "3", **(parameters or {})},
        reconcile_every_seconds=1.0,
        standin=standin,
    )
    with LocalStack(options) as stack:
        yield stack


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll a condition the pipeline reaches in its own time; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout:.0f} s")
