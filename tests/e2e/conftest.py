"""A real browser for the dashboard's tests: Debian's chromium, headless, driven by
Playwright (its own browser download is not reachable here; `make test` installs chromium).
Screenshots go to build/screenshots/ (the tests' artifacts: look at them)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = os.environ.get("DLAAS_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "build" / "screenshots"


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        pytest.fail(f"no chromium at {CHROMIUM}: `make test` installs Debian's (apt chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


class Visitor:
    """A browser context of its own (its own cookies): one user's visit to the dashboard."""

    def __init__(self, browser, base_url: str, width: int = 1280, height: int = 900):
        self.context = browser.new_context(
            base_url=base_url, viewport={"width": width, "height": height}
        )
        self.context.set_default_timeout(30_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.visited: list[str] = []
        self.page.on("framenavigated", lambda frame: self.visited.append(frame.url))

    def sign_in(self, token: str, then: str = "/ui/") -> None:
        self.page.goto(then)
        self.page.fill("#token", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(re.compile(r".*/ui/.*"))

    def shot(self, name: str) -> Path:
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, stack, api_url):
    """visit(user=None, width=1280): a fresh visitor, signed in as `user` if given."""
    opened: list[Visitor] = []

    def open_visit(user: str | None = None, width: int = 1280, height: int = 900) -> Visitor:
        visitor = Visitor(browser, stack.api_url, width, height)
        opened.append(visitor)
        if user is not None:
            visitor.sign_in(stack.tokens[user])
        return visitor

    yield open_visit
    for visitor in opened:
        assert visitor.errors == [], visitor.errors  # no script error on any page
        visitor.close()
