"""Settings: defaults, each kind of value read from DLAAS_* variables, errors that name their
variable, and the README's settings table against the declarations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.fleet.sizes import DEFAULT_SIZE_GPUS, ResourceSize, parse_size_table
from common.settings import KNOWN_STORE_TYPES, Settings, SettingsError, settings_table, variables

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_make_the_embedded_stack_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    home = (tmp_path / ".dlaas").resolve()
    assert settings.home == home
    assert settings.tokens_file == home / "tokens.json"
    assert settings.artifact_dir == home / "artifacts"
    assert settings.work_dir == home / "work"
    assert settings.local_store_root == home / "store"
    assert settings.redis_url == "redis://127.0.0.1:16379/0"
    assert settings.artifact_store == "local"
    assert settings.store_types == KNOWN_STORE_TYPES
    assert settings.size_gpus == DEFAULT_SIZE_GPUS
    assert settings.size_memory == {}
    assert settings.keep_workdir is False
    assert settings.run_max_processes == 4096
    assert settings.retention_seconds == 7 * 86400
    assert settings.result_expires_seconds == 7 * 24 * 3600
    assert settings.run_path.split(":")[-3:] == ["/usr/local/bin", "/usr/bin", "/bin"]
    assert Settings() == settings


def test_unset_or_empty_variables_mean_the_default(tmp_path):
    settings = Settings.from_env(
        {"DLAAS_HOME": str(tmp_path), "DLAAS_REDIS_URL": "", "DLAAS_RUN_MAX_PROCESSES": ""}
    )
    assert settings.redis_url == "redis://127.0.0.1:16379/0"
    assert settings.run_max_processes == 4096


def test_each_kind_of_value_is_read(tmp_path):
    settings = Settings.from_env(
        {
            "DLAAS_HOME": str(tmp_path),
            "DLAAS_WORK_DIR": str(tmp_path / "w"),
            "DLAAS_REDIS_URL": "redis://elsewhere:6379/1",
            "DLAAS_RUN_MAX_PROCESSES": "64",
            "DLAAS_RETENTION_DAYS": "0.5",
            "DLAAS_KEEP_WORKDIR": "yes",
            "DLAAS_STORE_TYPES": " local , s3 ,",
            "DLAAS_ADMIN_USERS": "ann,bob",
            "DLAAS_SIZE_GPUS": "small=1,medium=4,large=8",
            "DLAAS_SIZE_MEMORY": "small=8G, large=512M",
            "DLAAS_LOG_CHUNK_BYTES": "1024",
            "DLAAS_STACK_API_PORT": "1",  # someone else's variable: not a setting, not an error
        }
    )
    assert settings.home == tmp_path.resolve()
    assert settings.work_dir == (tmp_path / "w").resolve()
    assert settings.tokens_file == tmp_path.resolve() / "tokens.json"
    assert settings.redis_url == "redis://elsewhere:6379/1"
    assert settings.run_max_processes == 64
    assert settings.retention_seconds == 43200
    assert settings.keep_workdir is True
    assert settings.store_types == ("local", "s3")
    assert settings.admin_users == ("ann", "bob")
    assert settings.size_gpus[ResourceSize.MEDIUM] == 4
    assert settings.size_memory == {ResourceSize.SMALL: 8 << 30, ResourceSize.LARGE: 512 << 20}
    assert settings.log_chunk_bytes == 1024


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"DLAAS_KEEP_WORKDIR": "1"}, True),
        ({"DLAAS_KEEP_RUN_DIRS": "true"}, True),
        ({"DLAAS_KEEP_RUN_DIRS": "no"}, False),
        # Both set: the one named first wins, as before.
        ({"DLAAS_KEEP_WORKDIR": "0", "DLAAS_KEEP_RUN_DIRS": "1"}, True),
    ],
)
def test_an_alias_sets_the_same_setting(environ, expected):
    assert Settings.from_env(environ).keep_workdir is expected


def test_overrides_win_over_the_environment(tmp_path):
    settings = Settings.from_env(
        {"DLAAS_SECRET_KEY": "from-env", "DLAAS_KEEP_WORKDIR": "1"},
        secret_key="given",
        keep_workdir=False,
        home=tmp_path,
    )
    assert (settings.secret_key, settings.keep_workdir) == ("given", False)


def test_settings_are_frozen_and_read_no_environment(monkeypatch):
    monkeypatch.setenv("DLAAS_REDIS_URL", "redis://not-read:1/0")
    settings = Settings(run_retries=2)
    assert settings.redis_url == "redis://127.0.0.1:16379/0"
    with pytest.raises(ValueError):
        settings.run_retries = 3
    assert Settings.from_env().redis_url == "redis://not-read:1/0"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DLAAS_RUN_MAX_PROCESSES": "0"}, "DLAAS_RUN_MAX_PROCESSES: must be at least 1, got 0"),
        ({"DLAAS_RUN_MAX_OPEN_FILES": "-1"}, "DLAAS_RUN_MAX_OPEN_FILES: must be at least 1"),
        ({"DLAAS_AUDIT_MAX_ENTRIES": "lots"}, "DLAAS_AUDIT_MAX_ENTRIES: expected a number, got"),
        ({"DLAAS_LEASE_TTL_SECONDS": "30s"}, "DLAAS_LEASE_TTL_SECONDS: expected a number"),
        ({"DLAAS_KEEP_WORKDIR": "maybe"}, "DLAAS_KEEP_WORKDIR: expected true or false"),
        ({"DLAAS_SIZE_MEMORY": "x=1"}, "DLAAS_SIZE_MEMORY: entry 'x=1': unknown size"),
        ({"DLAAS_SIZE_MEMORY": "small=0"}, "DLAAS_SIZE_MEMORY: entry 'small=0': expected an"),
        ({"DLAAS_SIZE_GPUS": "small=1,medium=2"}, "DLAAS_SIZE_GPUS: missing large"),
        ({"DLAAS_SIZE_GPUS": "small=one"}, "DLAAS_SIZE_GPUS: entry 'small=one': GPU count"),
        ({"DLAAS_STORE_TYPES": "local,ftp"}, "DLAAS_STORE_TYPES: unknown type 'ftp'"),
        ({"DLAAS_ARTIFACT_STORE": "ftp"}, "DLAAS_ARTIFACT_STORE: 'ftp' (known: local, s3, swift)"),
        ({"DLAAS_ARTIFACT_STORE": "s3"}, "DLAAS_ARTIFACT_ENDPOINT: required"),
        ({"DLAAS_RUN_PYTHON_OUTPUT": "raw"}, "DLAAS_RUN_PYTHON_OUTPUT: 'raw' (known: flushed"),
        ({"DLAAS_RUN_AS": "root"}, "DLAAS_RUN_AS: name an unprivileged user, got 'root'"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(environ, message):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ)
    assert str(caught.value).startswith(message)


def test_values_passed_in_are_checked_as_well():
    with pytest.raises(SettingsError, match="DLAAS_RUN_MAX_PROCESSES: must be at least 1, got 0"):
        Settings(run_max_processes=0)
    with pytest.raises(SettingsError, match="no_such_setting: not a setting"):
        Settings(no_such_setting=1)


def test_one_parser_reads_both_size_tables():
    assert parse_size_table("small=0, medium=2 ,large=4") == {
        ResourceSize.SMALL: 0,
        ResourceSize.MEDIUM: 2,
        ResourceSize.LARGE: 4,
    }
    memory = Settings.from_env({"DLAAS_SIZE_MEMORY": "medium=16GiB,small=1024"}).size_memory
    assert memory == {ResourceSize.MEDIUM: 16 << 30, ResourceSize.SMALL: 1024}
    with pytest.raises(ValueError, match="entry 'small': expected SIZE=VALUE"):
        parse_size_table("small")


def _readme_rows() -> dict[str, tuple[str, str]]:
    """The README's settings table: each variable (and alias) to its (default, meaning)."""
    text = README.read_text()
    section = text[text.index("## Settings\n") :]
    section = section[: section.find("\n## ", 1)]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 3 or not cells[0].startswith("`DLAAS_"):
            continue
        for variable in re.findall(r"`(DLAAS_[A-Z0-9_]+)`", cells[0]):
            rows[variable] = (cells[1], cells[2])
    return rows


def _declared_rows() -> dict[str, tuple[str, str]]:
    rows: dict[str, tuple[str, str]] = {}
    for line in settings_table().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        for variable in re.findall(r"`(DLAAS_[A-Z0-9_]+)`", cells[0]):
            rows[variable] = (cells[1], cells[2])
    return rows


def test_the_readme_settings_table_matches_the_declarations():
    readme, declared = _readme_rows(), _declared_rows()
    hint = "update README.md's settings table from `.venv/bin/python -m common.settings`"
    assert not declared.keys() - readme.keys(), f"declared, missing from the README ({hint})"
    assert not readme.keys() - declared.keys(), f"in the README, not declared ({hint})"
    for variable, (default, meaning) in declared.items():
        assert readme[variable][0] == default, f"{variable}: README default differs ({hint})"
        assert readme[variable][1] == meaning, f"{variable}: README meaning differs ({hint})"


def test_every_setting_has_a_variable_and_a_line_of_doc():
    for name, field in Settings.model_fields.items():
        assert variables(name)[0].startswith("DLAAS_")
        assert field.description, f"{name}: no description"
