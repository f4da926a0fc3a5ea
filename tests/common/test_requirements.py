"""A run's requirements.txt: requirements only, each line checked, the bad one named."""

from __future__ import annotations

import pytest

from common.requirements import RequirementsError, parse_requirements


def test_requirements_are_kept_as_written_without_comments_or_blanks():
    text = "# ours\nnumpy==2.1.3\n\ntabulate>=0.8,<0.9  # for the report\nrich[jupyter]==13.9\n"
    assert parse_requirements(text) == ("numpy==2.1.3", "tabulate>=0.8,<0.9", "rich[jupyter]==13.9")


@pytest.mark.parametrize(
    "line, problem",
    [
        ("--index-url http://elsewhere/simple", "options such as '--index-url' are not accepted"),
        ("-r other.txt", "options such as '-r'"),
        ("-e .", "options such as '-e'"),
        ("foo @ https://example.com/foo.whl", "foo names a URL"),
        ("not a requirement !!", "is not a requirement"),
    ],
)
def test_a_bad_line_is_named_by_its_number(line, problem):
    with pytest.raises(RequirementsError) as refused:
        parse_requirements(f"numpy==2.1.3\n{line}\n")
    assert str(refused.value).startswith("requirements.txt line 2: ") and problem in str(
        refused.value
    )
