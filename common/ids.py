"""Run ids shaped like the original service's: `training-` and nine letters or digits; and
experiment ids likewise, `experiment-` and nine."""

from __future__ import annotations

import re
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
RUN_ID_IN_TEXT = re.compile(r"training-[A-Za-z0-9]{9}")  # one standing in a longer text
RUN_ID_PATTERN = re.compile(rf"^{RUN_ID_IN_TEXT.pattern}$")
EXPERIMENT_ID_PATTERN = re.compile(r"^experiment-[A-Za-z0-9]{9}$")


def new_run_id() -> str:
    return "training-" + "".join(secrets.choice(_ALPHABET) for _ in range(9))


def is_run_id(text: str) -> bool:
    return bool(RUN_ID_PATTERN.match(text))


def new_experiment_id() -> str:
    return "experiment-" + "".join(secrets.choice(_ALPHABET) for _ in range(9))


def is_experiment_id(text: str) -> bool:
    return bool(EXPERIMENT_ID_PATTERN.match(text))
