"""The CLI without a server: config contexts, aliases, id arguments, and the error policy."""

from __future__ import annotations

import stat
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from orchard.cli.common import pick_ids
from orchard.cli.main import cli
from orchard.client import contexts
from orchard.client.base import ENV_NAMES


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for names in ENV_NAMES.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(contexts.CONFIG_ENV, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return tmp_path / "conf" / "orchard.yaml"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args: str | Path) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def failed(*args: str | Path) -> str:
    """The one-line error of a failing command."""
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def create(cfg: Path, name: str, pat: str = "pat-0123456789", **extra: str) -> str:
    args = ["--config", cfg, "config", "create-context", name, "--pat", pat]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", value]
    return ok(*args)


# -- contexts --------------------------------------------------------------------------------


def test_create_context_writes_a_private_file_and_first_one_is_current(cfg):
    out = create(cfg, "local", base_url="http://127.0.0.1:7600", user_id="alice")
    assert out == "Created context 'local' (now current).\n"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert yaml.safe_load(cfg.read_text()) == {
        "current_context": "local",
        "contexts": {
            "local": {
                "base_url": "http://127.0.0.1:7600",
                "pat": "pat-0123456789",
                "user_id": "alice",
            }
        },
    }
    assert (
        create(cfg, "prod", base_url="https://orchard.example.com") == "Created context 'prod'.\n"
    )
    assert ok("--config", cfg, "config", "current-context") == "local\n"


def test_use_current_list_delete(cfg):
    create(cfg, "a")
    create(cfg, "b", base_url="http://b:1")
    assert ok("--config", cfg, "config", "use-context", "b") == "Switched to context 'b'.\n"
    assert ok("--config", cfg, "config", "current") == "b\n"
    listing = ok("--config", cfg, "config", "get-contexts").splitlines()
    assert listing[0].split() == ["CURRENT", "NAME", "BASE", "URL", "USER"]
    assert listing[1].split()[:1] == ["a"]
    assert listing[2].split()[:3] == ["*", "b", "http://b:1"]
    assert ok("--config", cfg, "config", "delete-context", "b") == "Deleted context 'b'.\n"
    assert "no current context" in failed("--config", cfg, "config", "current-context")
    assert ok("--config", cfg, "config", "use", "a") == "Switched to context 'a'.\n"


def test_aliases_of_config_commands(cfg):
    create(cfg, "a")
    assert ok("--config", cfg, "config", "ls") == ok("--config", cfg, "config", "list-contexts")
    assert ok("--config", cfg, "config", "current") == "a\n"
    assert ok("--config", cfg, "config", "rm", "a") == "Deleted context 'a'.\n"


def test_unknown_context_lists_the_known_ones(cfg):
    create(cfg, "a")
    line = failed("--config", cfg, "config", "use-context", "nope")
    assert "context 'nope' not found" in line and "known: a" in line
    assert "not found" in failed("--config", cfg, "config", "delete-context", "nope")


def test_duplicate_context_and_bad_base_url(cfg):
    create(cfg, "a")
    assert "already exists" in failed(
        "--config", cfg, "config", "create-context", "a", "--pat", "x"
    )
    assert "invalid base URL" in failed(
        "--config", cfg, "config", "create-context", "b", "--pat", "x", "--base-url", "nohost"
    )


@pytest.mark.parametrize(
    "command", [["get-contexts"], ["use-context", "a"], ["current-context"], ["view"]]
)
def test_missing_config_file_is_a_clear_error(tmp_path, command):
    missing = tmp_path / "missing" / "config"
    line = failed("--config", missing, "config", *command)
    assert f"no config file at {missing}" in line and "orchard login" in line
    assert not missing.exists()


def test_config_env_names_the_file(monkeypatch, cfg):
    monkeypatch.setenv("ORCHARD_CONFIG", str(cfg))
    create(cfg, "from-env")
    assert ok("config", "current") == "from-env\n"


def test_view_masks_pats_unless_asked(cfg):
    create(cfg, "a", pat="secret-token-1234")
    assert "****1234" in ok("--config", cfg, "config", "view")
    assert "secret-token" not in ok("--config", cfg, "config", "view")
    assert "secret-token-1234" in ok("--config", cfg, "config", "view", "--show-secrets")


def test_sdk_reads_the_context_the_cli_wrote(cfg):
    from orchard.client.base import resolve_settings

    create(cfg, "a", base_url="http://h:1", user_id="alice")
    create(cfg, "b", pat="other-pat-000", base_url="http://h:2")
    assert resolve_settings(config_path=cfg).base_url == "http://h:1"
    assert resolve_settings(config_path=cfg, context="b").pat == "other-pat-000"


# -- aliases, ids, error policy ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "long"),
    [
        (["cc", "ls"], ["computecluster", "list"]),
        (["np", "c"], ["nodepool", "create"]),
        (["dp", "rm"], ["deployment", "delete"]),
        (["dp", "status"], ["deployment", "get"]),
    ],
)
def test_aliases_resolve_to_the_same_command(short, long):
    # Only the usage line differs: it shows the name the command was called by.
    assert ok(*short, "--help").splitlines()[1:] == ok(*long, "--help").splitlines()[1:]


def test_group_help_shows_aliases():
    out = ok("--help")
    assert "computecluster (cc)" in out and "nodepool (np)" in out and "deployment (dp)" in out
    assert "list (ls)" in ok("cc", "--help")


def test_resource_command_without_credentials_fails_in_one_line(tmp_path):
    line = failed("--config", tmp_path / "none", "cc", "ls")
    assert "no personal access token" in line and "orchard login" in line


def test_missing_id_says_both_forms():
    line = failed("cc", "get")
    assert "missing compute cluster id" in line and "--compute_cluster_id/-cc_id" in line
    assert "missing nodepool id" in failed("np", "delete", "cc1")
    assert "missing deployment id" in failed("dp", "rm")


def test_usage_errors_exit_1_in_one_line():
    assert "No such command 'nope'" in failed("nope")
    assert "Missing option '--config'" in failed("cc", "create", "x")
    assert "too many ids" in failed("np", "get", "-cc_id", "a", "b", "c")


def test_no_arguments_shows_help():
    assert "Usage:" in ok()


def test_pick_ids_mixes_flags_and_positionals():
    names = ["compute_cluster_id", "nodepool_id"]
    assert pick_ids(names, ["cc", "np"], {}) == {"compute_cluster_id": "cc", "nodepool_id": "np"}
    assert pick_ids(names, ["np", None], {"compute_cluster_id_flag": "cc"}) == {
        "compute_cluster_id": "cc",
        "nodepool_id": "np",
    }
    flags = {"compute_cluster_id_flag": "cc", "nodepool_id_flag": "np"}
    assert pick_ids(names, [None, None], flags) == {"compute_cluster_id": "cc", "nodepool_id": "np"}
    with pytest.raises(click.UsageError, match="missing nodepool id"):
        pick_ids(names, ["cc"], {}, required=names)
