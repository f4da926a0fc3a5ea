"""The dashboard in a real browser (Debian's chromium under Playwright) on the real stack:
sign-in, the runs list, a run's page (timeline, curves drawn, live log, usage, results,
cancel and delete), another user's view, the fleet; and the session's cookie and CSRF rules
over plain HTTP. Screenshots: build/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
import signal
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import requests
from playwright.sync_api import expect

from common.fleet.nodes import NodeStore
from tests.conftest import manifest_yaml
from tests.e2e.test_metrics_e2e import example_run  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration

TICKS = "for i in $(seq 1 900); do echo tick $i; sleep 0.2; done"


def api(stack, method: str, path: str, user: str = "alice", **kw) -> requests.Response:
    return requests.request(
        method, f"{stack.api_url}{path}", headers=stack.headers(user), timeout=10, **kw
    )


def own_run_ids(stack, user: str) -> set[str]:
    """Every run of `user`'s own list, page by page."""
    found, offset = set(), 0
    while offset is not None:
        page = api(stack, "GET", "/v3/models", user, params={"limit": 100, "offset": offset})
        found |= {r["model_id"] for r in page.json()["models"]}
        offset = page.json()["next_offset"]
    return found


def test_a_signed_out_visitor_is_sent_to_sign_in_and_a_wrong_token_is_refused(visit, stack):
    visitor = visit()
    page = visitor.page
    page.goto("/ui/runs/training-AbCdEf123")
    where = urlsplit(page.url)
    assert where.path == "/ui/sign-in"
    assert parse_qs(where.query)["next"] == ["/ui/runs/training-AbCdEf123"]
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    expect(page.locator("#sign-in-error")).to_have_text("token: not a valid token")
    assert visitor.context.cookies() == []
    visitor.shot("sign-in-refused")
    # What the page's scripts read is the API: signed out, it answers 401 too.
    assert page.request.get(f"{stack.api_url}/v3/models").status == 401


def test_the_demo_run_is_listed_and_its_page_shows_timeline_curves_usage_results(
    visit,
    stack,
    example_run,  # noqa: F811
):
    run_id, shown, out, records = example_run
    visitor = visit("alice")
    page = visitor.page
    (cookie,) = [c for c in visitor.context.cookies() if c["name"] == "dlaas_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    row = page.locator(f'#runs tr[data-run-id="{run_id}"]')
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("alice")  # alice is an admin: every run, with its owner
    expect(row).to_contain_text(shown["worker"])
    visitor.shot("runs")

    row.locator(f'a[href="/ui/runs/{run_id}"]').click()
    expect(page.locator("#run-state")).to_have_text("completed")
    states = page.locator("#timeline tbody tr").evaluate_all("rs => rs.map(r => r.dataset.state)")
    assert states == [entry["state"] for entry in shown["history"]]
    assert states[0] == "PENDING" and states[-1] == "COMPLETED"
    expect(page.locator("#timeline-bar .segment.state-processing")).to_have_count(1)

    # A curve per metric, really drawn: its data has the run's points, and its canvas has ink.
    chart = page.locator('figure.chart[data-metric^="test_accuracy "]')
    expect(chart).to_have_attribute("data-points", str(len(records)))
    inked = chart.locator("canvas").evaluate(
        """canvas => {
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            let inked = 0;
            for (let i = 3; i < pixels.data.length; i += 4) if (pixels.data[i] > 0) inked++;
            return inked;
        }"""
    )
    assert inked > 500, inked
    assert page.locator("figure.chart").count() == len(shown["metrics"])

    expect(page.locator('#usage dd[data-usage="peak_rss_bytes"]')).to_contain_text("MB")
    expect(page.locator('#usage dd[data-usage="staged_bytes"]')).to_be_visible()
    expect(page.locator("#log")).to_contain_text("epoch")

    # Each result file has a link that downloads exactly what the run stored.
    link = page.locator('#results a[href$="/learner-1/training-log.txt"]')
    expect(link).to_have_count(1)
    got = page.request.get(stack.api_url + link.get_attribute("href"))
    assert got.status == 200
    assert got.body() == (out / "learner-1" / "training-log.txt").read_bytes()
    visitor.shot("run")

    # No page and no address the browser went to ever held the token.
    token = stack.tokens["alice"]
    assert token not in page.content() and token not in cookie["value"]
    assert not [url for url in visitor.visited if token in url]


def test_the_runs_list_filters_by_state_and_name_and_shows_why_a_run_failed(
    visit,
    stack,
    example_run,  # noqa: F811
):
    run_id = example_run[0]
    failed = stack.submit(manifest_yaml(command="echo bad >&2; exit 3", name="Filtered-Fail"))
    shown = stack.wait_ended(failed)
    assert shown["state"] == "FAILED"
    visitor = visit("alice")
    page = visitor.page
    example_row = page.locator(f'#runs tr[data-run-id="{run_id}"]')
    failed_row = page.locator(f'#runs tr[data-run-id="{failed}"]')
    expect(failed_row.locator("td.reason")).to_contain_text(shown["error_code"])
    page.select_option("#filters select[name=state]", "FAILED")
    expect(example_row).to_have_count(0)
    expect(failed_row).to_be_visible()
    states = page.locator("#runs tbody tr .state").all_inner_texts()
    assert states and set(states) == {"failed"}
    page.fill("#filters input[name=name]", "filtered-f")  # a part of the name, any case
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    expect(page.locator("#count")).to_have_text("1–1 of 1 runs")
    visitor.shot("runs-filtered")
    page.select_option("#filters select[name=state]", "")
    page.fill("#filters input[name=name]", "")
    expect(example_row).to_be_visible()


def test_the_log_follows_live_and_cancel_from_the_page_halts_the_run(visit, stack, workers):
    stack.bucket("data"), stack.bucket("results")
    run_id = stack.submit(manifest_yaml(command=TICKS, name="ticking"))
    visitor = visit("alice")
    # The runs list, open in a second tab, follows the run without a reload.
    listing = visitor.context.new_page()
    listing.goto("/ui/")
    row = listing.locator(f'#runs tr[data-run-id="{run_id}"]')
    expect(row).to_contain_text("processing", timeout=60_000)
    page = visitor.page
    page.goto(f"/ui/runs/{run_id}")
    expect(page.locator("#log")).to_contain_text("tick ", timeout=60_000)
    first = _last_tick(page)
    # A line the run printed after the page had shown its log arrives without a reload.
    page.wait_for_function(
        """first => {
            const ticks = [...document.getElementById("log").textContent.matchAll(/tick (\\d+)/g)];
            return ticks.length && Number(ticks[ticks.length - 1][1]) > first + 2;
        }""",
        arg=first,
    )
    expect(page.locator("#run-state")).to_have_text("processing")
    page.fill("#log-search", "tick 1")
    expect(page.locator("#log-status")).to_contain_text("lines match")
    assert all("tick 1" in line for line in page.locator("#log").inner_text().splitlines())
    visitor.shot("run-live")

    page.click("#cancel")
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text(f"Cancel run {run_id}?")
    page.click("#confirm-yes")
    done = stack.wait_ended(run_id, timeout=60)
    assert done["state"] == "HALTED"
    # Ended by SIGTERM: the timeline says so (128 + 15), not that the command exited 0.
    storing = [e["message"] for e in done["history"] if e["state"] == "STORING"]
    assert storing == ["command exited with code 143"]
    expect(page.locator('#timeline tr[data-state="STORING"]')).to_contain_text("code 143")
    expect(page.locator("#run-state")).to_have_text("halted", timeout=15_000)
    expect(row).to_contain_text("halted", timeout=15_000)
    expect(row).to_contain_text(done["worker"])
    # What the CLI's cancel does: the same request, recorded as alice's in the audit.
    audit = api(stack, "GET", "/v3/admin/audit", params={"limit": 1000}).json()
    cancels = [e for e in audit["entries"] if e["action"] == "run.cancel"]
    assert any(e["target"] == run_id and e["actor"] == "alice" for e in cancels)
    visitor.shot("run-halted")


def _last_tick(page) -> int:
    return int(re.findall(r"tick (\d+)", page.locator("#log").inner_text())[-1])


def test_delete_from_the_page_asks_first_then_removes_the_run(visit, stack, workers):
    stack.bucket("data"), stack.bucket("results")
    run_id = stack.submit(manifest_yaml(command="echo done", name="to-delete"))
    stack.wait_ended(run_id)
    page = visit("alice").page
    page.goto(f"/ui/runs/{run_id}")
    expect(page.locator("#run-state")).to_have_text("completed")
    page.click("#delete")
    page.click("#confirm button[value=no]")
    expect(page.locator("#confirm")).to_be_hidden()
    assert api(stack, "GET", f"/v3/models/{run_id}").status_code == 200
    page.click("#delete")
    page.click("#confirm-yes")
    page.wait_for_url(re.compile(r".*/ui/$"))
    assert api(stack, "GET", f"/v3/models/{run_id}").status_code == 404


def test_another_user_sees_none_of_the_first_users_runs_and_gets_404_on_their_pages(
    visit,
    stack,
    example_run,  # noqa: F811
):
    run_id = example_run[0]
    alices = own_run_ids(stack, "alice")
    assert run_id in alices
    bobs_run = stack.submit(manifest_yaml(command="echo bob", name="bobs"), user="bob")
    stack.wait_ended(bobs_run, user="bob")
    visitor = visit("bob")
    page = visitor.page
    expect(page.locator(f'#runs tr[data-run-id="{bobs_run}"]')).to_be_visible()
    shown = set(page.locator("#runs tbody tr").evaluate_all("rs => rs.map(r => r.dataset.runId)"))
    assert bobs_run in shown and not shown & alices
    expect(page.locator("h1")).to_have_text("Your runs")
    visitor.shot("runs-other-user")

    answer = page.goto(f"/ui/runs/{run_id}")
    assert answer.status == 404
    expect(page.locator("#missing")).to_have_text(f"no training run {run_id!r}")
    visitor.shot("run-other-user-404")
    for path in ("", "/results", "/logs", "/metrics"):
        assert page.request.get(f"{stack.api_url}/v3/models/{run_id}{path}").status == 404, path
    assert page.goto("/ui/experiments/exp-AbCdEf123").status == 404


def test_a_change_needs_the_sessions_csrf_token_and_this_sites_origin(stack, workers):
    stack.bucket("data"), stack.bucket("results")
    run_id = stack.submit(manifest_yaml(command="echo x", name="csrf"))
    stack.wait_ended(run_id)
    with requests.Session() as browser:
        url = stack.api_url
        foreign = browser.post(
            f"{url}/ui/sign-in",
            data={"token": stack.tokens["alice"]},
            headers={"Origin": "http://evil.example"},
            allow_redirects=False,
        )
        assert foreign.status_code == 403 and "dlaas_session" not in browser.cookies
        signed = browser.post(
            f"{url}/ui/sign-in", data={"token": stack.tokens["alice"]}, allow_redirects=False
        )
        assert signed.status_code == 303 and stack.tokens["alice"] not in signed.headers["Location"]
        set_cookie = signed.headers["Set-Cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        page = browser.get(f"{url}/ui/").text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        assert stack.tokens["alice"] not in page

        assert browser.get(f"{url}/v3/models/{run_id}").status_code == 200  # reading: cookie only
        refused = browser.delete(f"{url}/v3/models/{run_id}")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf"
        wrong = browser.delete(f"{url}/v3/models/{run_id}", headers={"X-CSRF-Token": "x" * 43})
        assert wrong.status_code == 403
        elsewhere = browser.delete(
            f"{url}/v3/models/{run_id}",
            headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        )
        assert elsewhere.status_code == 403
        assert api(stack, "GET", f"/v3/models/{run_id}").status_code == 200  # nothing changed
        assert browser.delete(f"{url}/v3/models/{run_id}", headers={"X-CSRF-Token": csrf}).ok
        assert api(stack, "GET", f"/v3/models/{run_id}").status_code == 404

        assert browser.post(f"{url}/ui/sign-out", data={"csrf": "x"}).status_code == 403
        out = browser.post(f"{url}/ui/sign-out", data={"csrf": csrf}, allow_redirects=False)
        assert out.status_code == 303
        assert browser.get(f"{url}/v3/models").status_code == 401
        assert browser.get(f"{url}/ui/fleet", allow_redirects=False).status_code == 303


def test_the_fleet_page_shows_each_nodes_gpus_the_queues_and_draining_and_lost_nodes(
    visit, stack, workers
):
    stack.bucket("data"), stack.bucket("results")
    # No worker of the stack serves large: this run waits on its queue.
    waiting = stack.submit(manifest_yaml(command="true", name="waits", resource="large"))
    node = "fleet-worker@test"
    pid = stack.start_worker(node, "7")
    try:
        assert api(stack, "POST", f"/v3/nodes/{node}/drain").status_code == 202
        visitor = visit("alice")
        page = visitor.page
        page.goto("/ui/fleet")
        small = page.locator(f'.node[data-node="{workers["small"]}"]')
        expect(small).to_contain_text("GPU 0")
        said = "isolation: bubblewrap (" if shutil.which("bwrap") else "isolation: none: "
        expect(small.locator(".isolation")).to_contain_text(said)
        expect(page.locator(f'.node[data-node="{workers["medium"]}"] li.gpu')).to_have_count(2)
        expect(page.locator(f'.node[data-node="{node}"] .status')).to_have_text("draining")
        large = page.locator('.queue[data-size="large"]')
        expect(large.locator(f'a[href="/ui/runs/{waiting}"]')).to_be_visible()
        pending = api(stack, "GET", "/v3/queues").json()["queues"]
        (large_queue,) = [q for q in pending if q["size"] == "large"]
        (queued,) = [r for r in large_queue["runs"] if r["model_id"] == waiting]
        assert queued["position"] >= 1
        # Its own page and `show` say the same place, and why it waits.
        detail = api(stack, "GET", f"/v3/models/{waiting}").json()
        assert detail["waiting"]["position"] == queued["position"]
        assert detail["waiting"]["of"] == large_queue["pending"]
        assert detail["waiting"]["reason"] == "no worker serves large"
        visitor.shot("fleet")

        stack.pids.remove(pid)
        os.kill(pid, signal.SIGKILL)
        expect(page.locator(f'.node[data-node="{node}"] .status')).to_have_text(
            "lost", timeout=30_000
        )
        visitor.shot("fleet-lost-node")
        # Another user sees the waiting run as someone else's, without its name.
        other = visit("bob").page
        other.goto("/ui/fleet")
        expect(other.locator('.queue[data-size="large"]')).to_contain_text("another user's run")
        expect(other.locator(f'a[href="/ui/runs/{waiting}"]')).to_have_count(0)
    finally:
        if pid in stack.pids:
            stack.stop(pid)
        NodeStore(redis.Redis.from_url(stack.env["DLAAS_REDIS_URL"])).forget(node)
        api(stack, "PATCH", f"/v3/models/{waiting}", json={"status": "halt"})


def test_a_narrow_window_shows_the_run_page_without_sideways_scrolling(
    visit,
    stack,
    example_run,  # noqa: F811
):
    run_id = example_run[0]
    visitor = visit("alice", width=390, height=844)
    page = visitor.page
    page.goto(f"/ui/runs/{run_id}")
    expect(page.locator('figure.chart[data-metric^="test_accuracy "]')).to_be_visible()
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, wide  # the tables scroll inside their own box; the page does not
    expect(page.locator("#run-state")).to_have_text("completed")  # a word, not only a colour
    visitor.shot("run-narrow")


def _metric_run(stack, steps: int, scale: int) -> str:
    """A run whose program reports `loss` (scale*100/step) at steps 1..steps (JSON lines)."""
    command = (
        f"for s in $(seq 1 {steps}); do "
        f'echo "{{\\"step\\": $s, \\"loss\\": $(( {scale} * 100 / s ))}}" '
        ">> $LOG_DIR/evaluation-metrics.txt; done"
    )
    return stack.submit(manifest_yaml(command=command, name=f"compare-{scale}"))


def test_runs_compared_side_by_side_from_the_runs_list_and_by_a_shared_address(
    visit, stack, workers
):
    stack.bucket("data"), stack.bucket("results")
    counts = {5: 1, 3: 2, 4: 3}  # steps: scale
    run_ids = [_metric_run(stack, steps, scale) for steps, scale in counts.items()]
    for run_id in run_ids:
        assert stack.wait_ended(run_id)["state"] == "COMPLETED"
    visitor = visit("alice")
    page = visitor.page
    page.fill("#filters input[name=name]", "compare-")
    for run_id in run_ids:
        page.locator(f'#runs tr[data-run-id="{run_id}"] input[type=checkbox]').check()
    expect(page.locator("#compare")).to_have_text("Compare 3 selected")
    page.click("#compare")
    page.wait_for_url(re.compile(r".*/ui/compare\?runs="))
    shared = urlsplit(page.url)
    assert set(parse_qs(shared.query)["runs"][0].split(",")) == set(run_ids)
    in_address = parse_qs(shared.query)["runs"][0].split(",")

    def check(page) -> None:
        # One chart of `loss`, a line a run in the address's order, each with its points.
        chart = page.locator('figure.chart[data-metric="loss"]')
        by_run = dict(zip(run_ids, counts, strict=True))
        expect(chart).to_have_attribute(
            "data-line-points", ",".join(str(by_run[r]) for r in in_address)
        )
        expect(chart).to_have_attribute("data-points", "5")  # steps 1..5 in all
        commands = page.locator('#differences tr[data-row="Command"]')
        expect(commands).to_have_class("differs")
        for run_id in in_address:
            expect(page.locator(f'#differences th[data-run-id="{run_id}"]')).to_be_visible()
        last = page.locator('#differences tr[data-row="loss, last"] td')
        expected = {r: f"{scale * 100 // steps} (step {steps})" for r, (steps, scale) in
                    zip(run_ids, counts.items(), strict=True)}  # fmt: skip
        expect(last).to_have_text([expected[r] for r in in_address])
        expect(page.locator('#differences tr[data-row="Framework"]')).not_to_have_class("differs")

    check(page)
    visitor.shot("compare")
    page.click(".axis-switch button[data-axis=time]")
    expect(page.locator('figure.chart[data-metric="loss"]')).to_have_attribute("data-axis", "time")

    # The address shared: another visitor of the same user sees the same comparison.
    again = visit("alice").page
    again.goto(shared.path + "?" + shared.query)
    check(again)
    # Another user's runs in the address: the 404 page naming one, as a run's page does.
    other = visit("bob").page
    answer = other.goto(shared.path + "?" + shared.query)
    assert answer.status == 404
    expect(other.locator("#missing")).to_have_text(f"no training run {in_address[0]!r}")
    assert other.goto("/ui/compare?runs=" + run_ids[0]).status == 404  # one run: nothing to compare
