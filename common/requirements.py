"""A run's `requirements.txt` (at the top of its model zip): the packages it adds to its
framework's, one PEP 508 requirement a line, as pip and uv read them. Package sources are the
operator's: options (`--index-url`, `-r`, `-e`) and direct URLs are refused."""

from __future__ import annotations

from packaging.requirements import InvalidRequirement, Requirement

REQUIREMENTS_FILE = "requirements.txt"
MAX_LINES = 500


class RequirementsError(ValueError):
    """A line of requirements.txt cannot be used: the message names the line."""


def parse_requirements(text: str) -> tuple[str, ...]:
    """The requirement specs of `text`, comments and blank lines left out, each as written."""
    specs = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        where = f"{REQUIREMENTS_FILE} line {number}"
        if line.startswith("-"):
            raise RequirementsError(
                f"{where}: options such as {line.split()[0]!r} are not accepted (packages "
                "come from the service's package sources; list requirements only)"
            )
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise RequirementsError(f"{where}: {line!r} is not a requirement: {exc}") from None
        if requirement.url:
            raise RequirementsError(
                f"{where}: {requirement.name} names a URL; only package names and versions are "
                "accepted (packages come from the service's package sources)"
            )
        specs.append(line)
    if len(specs) > MAX_LINES:
        raise RequirementsError(f"{REQUIREMENTS_FILE}: more than {MAX_LINES} requirements")
    return tuple(specs)
