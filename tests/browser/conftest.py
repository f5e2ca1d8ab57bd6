"""One local stack with its console and one headless Chromium per module; skipped where no Chromium is found.

The browser is Debian's ``chromium`` driven by Playwright's Python API (``executable_path``; Playwright's
own browser downloads are never used). Screenshots are kept under ``test-artifacts/browser/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from local_stack import LocalStack, StackOptions

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ConsoleMessage, Dialog, Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Chromium logs every 4xx answer; a refused drop's 422 is the answer the form shows as problems.
EXPECTED_REFUSAL = "status of 422 (Unprocessable Entity)"
INSTALL_HINT = "install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH"


def chromium_path() -> str | None:
    given = os.environ.get("CHROMIUM_PATH")
    if given:
        return given if Path(given).is_file() else None
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def skip_reason() -> str | None:
    if chromium_path() is None:
        return f"browser tests skipped: no Chromium found; {INSTALL_HINT}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests skipped: Playwright for Python is not installed (make install)"
    return None


_SKIPPED: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = skip_reason()
    if reason is None:
        return
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
            _SKIPPED.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SKIPPED:
        terminalreporter.write_line(f"{len(_SKIPPED)} {skip_reason()}", yellow=True, bold=True)
    elif ARTIFACTS.is_dir() and any(ARTIFACTS.glob("*.png")):
        terminalreporter.write_line(f"browser screenshots: {ARTIFACTS}")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    options = StackOptions(
        environment={"MONTHLY_BUDGET_USD": "1"},
        parameters={"FolderSettleSeconds": "3"},
        reconcile_every_seconds=1.0,
        console=True,
    )
    with LocalStack(options) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    assert executable is not None
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=LAUNCH_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A fresh tab whose script errors, refused resources and dialogs fail the test."""
    tab = browser.new_page()
    troubles: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        troubles.append(f"dialog opened: {dialog.message}")
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and EXPECTED_REFUSAL not in message.text:
            troubles.append(f"console {message.type}: {message.text}")

    tab.on("pageerror", lambda error: troubles.append(f"script error: {error}"))
    tab.on("dialog", on_dialog)
    tab.on("console", on_console)
    yield tab
    tab.close()
    assert troubles == [], troubles


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
