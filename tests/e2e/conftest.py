"""The end-to-end suite records every AWS call the functions make, for the least-privilege check.

The check (``test_zz_least_privilege.py``, last by name) can tell a missing permission from any
run, but an unused one only from a run of the whole suite: it reads here which ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from local_stack.calls import CallRecorder

E2E_DIR = Path(__file__).resolve().parent
CHECK_MODULE = "test_zz_least_privilege.py"


@dataclass
class SuiteRun:
    """Which end-to-end modules this session selected, and whether any of their tests were left out or failed."""

    modules: set[str] = field(default_factory=set)
    deselected: int = 0
    failed: list[str] = field(default_factory=list)

    def incomplete_because(self) -> str | None:
        every = {p.name for p in E2E_DIR.glob("test_*.py")} - {CHECK_MODULE}
        if missing := sorted(every - self.modules):
            return f"these end-to-end modules did not run: {', '.join(missing)}"
        if self.deselected:
            return f"{self.deselected} end-to-end tests were deselected"
        if self.failed:
            return f"end-to-end tests failed, so some calls may not have been made: {', '.join(self.failed[:5])}"
        return None


SUITE_RUN = SuiteRun()


def _in_e2e(path: Path) -> bool:
    return E2E_DIR in path.resolve().parents


def pytest_deselected(items: list[pytest.Item]) -> None:
    SUITE_RUN.deselected += sum(1 for item in items if _in_e2e(item.path))


def pytest_collection_finish(session: pytest.Session) -> None:
    SUITE_RUN.modules |= {item.path.name for item in session.items if _in_e2e(item.path)}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and CHECK_MODULE not in report.nodeid and "tests/e2e/" in report.nodeid:
        SUITE_RUN.failed.append(report.nodeid)


@pytest.fixture(scope="package", autouse=True)
def recorded_calls() -> Iterator[CallRecorder]:
    """Every call the functions make while the end-to-end suite runs; stops when the suite ends."""
    with CallRecorder() as recorder:
        yield recorder


@pytest.fixture
def suite_run() -> SuiteRun:
    return SUITE_RUN
