"""Query numbers (api/params.py): one parser, its 400s, and the parameter it documents."""

from __future__ import annotations

import pytest
from flask import Flask

from api.errors import ApiError
from api.params import IntArg

LIMIT = IntArg("limit", "Runs per page", default=50, low=1, high=200)
SINCE = IntArg("since", "First line", default=0, low=0, expected="a line number")


def _read(arg: IntArg, query: str) -> int:
    with Flask(__name__).test_request_context(f"/?{query}"):
        return arg.read()


def test_absent_is_the_default_and_a_whole_number_in_range_is_read():
    assert _read(LIMIT, "") == 50
    assert _read(LIMIT, "limit=1") == 1
    assert _read(LIMIT, "limit=200") == 200
    assert _read(SINCE, "since=123456789012345678901234567890") == 123456789012345678901234567890


@pytest.mark.parametrize("text", ["", "0", "201", "-1", "1.5", "²", "٣", " 7", "abc"])
def test_anything_else_is_a_400_naming_the_parameter(text):
    with pytest.raises(ApiError) as caught:
        _read(LIMIT, f"limit={text}")
    assert caught.value.status_code == 400 and caught.value.field == "limit"
    assert caught.value.message == "limit: expected a whole number from 1 to 200"


def test_a_number_past_pythons_int_limit_is_a_400_not_a_500():
    with pytest.raises(ApiError) as caught:
        _read(SINCE, "since=" + "9" * 5000)
    assert caught.value.status_code == 400
    assert caught.value.message == "since: expected a line number"


def test_the_documented_parameter_has_the_same_bounds():
    assert LIMIT.parameter() == {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Runs per page",
        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
    }
    assert SINCE.parameter()["schema"] == {"type": "integer", "minimum": 0}
