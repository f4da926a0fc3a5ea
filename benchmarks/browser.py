"""The dashboard's runs page in a real browser: the time from navigation to its first rows.

Used by benchmarks/runslist.py. Debian's chromium, headless, under Playwright (as the tests
drive it). The page marks `dlaas:first-rows` (performance.mark) once its first rows are in the
table; the figure is that mark's time since the navigation started: the HTML, the script and
uPlot's file, the API answer behind the page, and rendering 100 rows."""

from __future__ import annotations

import os
import statistics

from benchmarks.figures import percentile

CHROMIUM = os.environ.get("DLAAS_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def first_rows_ms(api_url: str, token: str, repeat: int = 20) -> dict[str, float]:
    """Signs in once, then loads the runs page `repeat` times (after one warm-up load):
    median and p95 of the time to its first rows, in ms."""
    from playwright.sync_api import sync_playwright

    times: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_context(base_url=api_url).new_page()
            page.goto("/ui/sign-in")
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_url("**/ui/")
            for i in range(repeat + 1):
                page.goto("/ui/")
                page.wait_for_function(
                    'performance.getEntriesByName("dlaas:first-rows").length > 0',
                    timeout=60_000,
                )
                mark = page.evaluate(
                    'performance.getEntriesByName("dlaas:first-rows")[0].startTime'
                )
                if i:  # the first load warms the browser's cache and the API
                    times.append(mark)
        finally:
            browser.close()
    return {
        "median": statistics.median(times),
        "p95": percentile(times, 0.95),
        "min": min(times),
        "max": max(times),
    }
