"""A real browser for the dashboard tests: Debian's Chromium driven by Playwright.

The browser is the machine's (``/usr/bin/chromium``, installed by
``scripts/install-test-deps.sh``); Playwright never downloads one here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from serverproc import ADMIN_KEY, Server

CHROMIUM = os.environ.get("HEADWATER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run scripts/install-test-deps.sh (apt-get install chromium)"
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (own sessionStorage); any JavaScript error on the page fails the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    tab.on("console", lambda msg: _console(msg, errors))
    yield tab
    context.close()
    assert not errors, "\n".join(errors)


def _console(msg: ConsoleMessage, errors: list[str]) -> None:
    # Failed requests the page expects (a 401 on a refused key, a 404 probe) log as
    # "Failed to load resource"; the page handles those. Anything else is a bug.
    if msg.type == "error" and "Failed to load resource" not in msg.text:
        errors.append(f"console error: {msg.text}")


def sign_in(page: Page, server: Server, key: str = ADMIN_KEY, hash_: str = "") -> None:
    page.goto(f"{server.url}/{hash_}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#topbar")).to_be_visible()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
