"""The runs list's filters over real HTTP (gunicorn) and a real Redis: `state`, `name`,
`experiment`, together, with `all=true`, and what `total` and `next_offset` count."""

from __future__ import annotations

import secrets

import pytest
import requests

from common.runstore import RunStore
from tests.conftest import make_zip, manifest_yaml

pytestmark = pytest.mark.integration

ZIP = make_zip({"train.py": "print('hi')\n"})


def _submit(stack, api_url, name: str, user: str) -> str:
    # `large`: no worker of the suite serves it, so the run stays PENDING until halted.
    answer = requests.post(
        f"{api_url}/v3/models",
        files={
            "model_definition": ("model.zip", ZIP, "application/zip"),
            "manifest": ("manifest.yml", manifest_yaml(resource="large", name=name)),
        },
        headers=stack.headers(user),
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["model_id"]


def _list(stack, api_url, query: str, user: str = "bob") -> dict:
    answer = requests.get(f"{api_url}/v3/models?{query}", headers=stack.headers(user), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _ids(listed: dict) -> list[str]:
    return [m["model_id"] for m in listed["models"]]


def test_filters_combine_and_total_counts_what_they_keep(stack, api_url):
    tag = secrets.token_hex(4)  # names no other test's run has
    names = [f"{tag}-Alpha-1", f"{tag}-beta-1", f"{tag}-ALPHA-2", f"{tag}-alpha-3"]
    made = [_submit(stack, api_url, name, "bob") for name in names]
    halted = made[1], made[2]
    for run_id in halted:
        answer = requests.patch(
            f"{api_url}/v3/models/{run_id}",
            json={"status": "halt"},
            headers=stack.headers("bob"),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text

    alpha = _list(stack, api_url, f"name={tag}-alpha&limit=2")
    assert _ids(alpha) == [made[3], made[2]]
    assert (alpha["total"], alpha["next_offset"]) == (3, 2)
    rest = _list(stack, api_url, f"name={tag}-ALPHA&limit=2&offset=2")
    assert _ids(rest) == [made[0]] and (rest["total"], rest["next_offset"]) == (3, None)
    both = _list(stack, api_url, f"name={tag}&state=HALTED")
    assert _ids(both) == [made[2], made[1]] and both["total"] == 2
    assert all(m["state"] == "HALTED" for m in both["models"])
    assert _ids(_list(stack, api_url, f"name={tag}-beta&state=PENDING")) == []
    # Another user's runs are not in a user's list, whatever the filter.
    assert _list(stack, api_url, f"name={tag}", user="alice")["total"] == 0
    # Every user's (alice is an admin): the same filters.
    every = _list(stack, api_url, f"all=true&name={tag}&state=PENDING", user="alice")
    assert _ids(every) == [made[3], made[0]] and every["total"] == 2
    assert {m["user"] for m in every["models"]} == {"bob"}


def test_the_experiment_filter_keeps_that_experiments_trials(stack, api_url):
    """Runs submitted over HTTP, made trials by setting their `experiment` field as the
    controller's submissions have it (common/submission.py), beside a plain run of the same
    user and another experiment's trial."""
    store = RunStore(stack.redis.client(0))
    own, other = "experiment-" + secrets.token_hex(4), "experiment-" + secrets.token_hex(4)
    plain = _submit(stack, api_url, "not-a-trial", "bob")
    trials = []
    for number, experiment in enumerate((own, other, own)):
        run_id = _submit(stack, api_url, f"trial-{number}", "bob")
        assert store.update(
            run_id, 0, experiment={"id": experiment, "trial": number, "values": {"x": 0.5}}
        )
        trials.append(run_id)
    listed = _list(stack, api_url, f"experiment={own}")
    assert _ids(listed) == [trials[2], trials[0]] and listed["total"] == 2
    assert [m["experiment"]["trial"] for m in listed["models"]] == [2, 0]
    assert plain not in _ids(_list(stack, api_url, f"experiment={other}"))
    assert _list(stack, api_url, f"experiment={own[:-1]}")["total"] == 0


@pytest.mark.parametrize("state", ["running", "pending", "NOPE", ""])
def test_a_state_that_is_none_is_400_naming_the_field(stack, api_url, state):
    answer = requests.get(
        f"{api_url}/v3/models?state={state}", headers=stack.headers("bob"), timeout=10
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "state" and "PENDING" in error["message"]
