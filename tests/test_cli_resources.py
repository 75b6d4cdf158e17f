"""The CLI and the SDK against a real server (the ``server`` fixture of conftest): the seed's
flows, the older flag forms, and what failures look like."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from orchard import ComputeCluster, Deployment, Nodepool, User, errors
from orchard.cli.main import cli
from orchard.client import contexts
from orchard.client.base import ENV_NAMES
from tests.resources import make_model

CLUSTER_YAML = """\
compute_cluster:
  id: ignored-by-the-argument
  description: My local cluster
  cloud_provider:
    id: local
  region: na
  managed_by: user
  cluster_type: local-dev
"""
NODEPOOL_YAML = """\
nodepool:
  instance_types:
    - id: local-cpu-1
  node_capacity_type:
    capacity_types: [1]
  min_instances: 0
  max_instances: 2
"""
DEPLOYMENT_YAML = """\
deployment:
  worker:
    model:
      id: m
      app_id: app
  scheduling_choice: 4
  autoscale_config:
    min_replicas: 0
    max_replicas: 3
"""

Orchard = Callable[..., Result]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for names in ENV_NAMES.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(contexts.CONFIG_ENV, raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    written = {}
    for name, text in (
        ("cluster", CLUSTER_YAML),
        ("nodepool", NODEPOOL_YAML),
        ("deployment", DEPLOYMENT_YAML),
    ):
        written[name] = tmp_path / f"{name}.yaml"
        written[name].write_text(text)
    return written


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return tmp_path / "cli" / "config"


@pytest.fixture
def orchard(server, cfg) -> Orchard:
    """The CLI, logged in to ``server`` as its user through a private config file."""

    def run(*args: object) -> Result:
        return CliRunner().invoke(cli, ["--config", str(cfg), *map(str, args)])

    result = run("login", server.base_url, "--pat", server.pat)
    assert result.exit_code == 0, result.output
    return run


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()[1:]]


# -- login -------------------------------------------------------------------------------------


def test_login_saves_a_verified_context(server, orchard, cfg):
    saved = contexts.read_config(cfg)
    assert saved.current_context == server.user_id
    ctx = saved.contexts[server.user_id]
    assert (ctx.base_url, ctx.pat, ctx.user_id) == (server.base_url, server.pat, server.user_id)
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert ok(orchard("config", "current")) == f"{server.user_id}\n"


def test_login_with_a_named_context_and_a_bad_pat(server, orchard, cfg):
    result = orchard("login", server.base_url, "--pat", server.pat, "--context", "work")
    assert f"as '{server.user_id}'; context 'work' is now current" in ok(result)
    assert "Error: " in error(orchard("login", server.base_url, "--pat", "not-a-pat"))
    assert contexts.read_config(cfg).current_context == "work"


def test_unreachable_server(cfg):
    result = CliRunner().invoke(
        cli, ["--config", str(cfg), "login", "http://127.0.0.1:1", "--pat", "x"]
    )
    assert "cannot reach Orchard at 127.0.0.1:1; start it with `orchard serve`" in error(result)
    assert not cfg.exists()


# -- the seed's flow ---------------------------------------------------------------------------


def test_cluster_nodepool_deployment_lifecycle(orchard, files, api):
    created = orchard("computecluster", "create", "local-cc", "--config", files["cluster"])
    assert ok(created) == "Created compute cluster 'local-cc'.\n"
    assert rows(ok(orchard("cc", "ls")))[0][:5] == ["local-cc", "local", "na", "local-dev", "My"]
    got = yaml.safe_load(ok(orchard("cc", "get", "local-cc")))["compute_cluster"]
    assert (got["id"], got["region"]) == ("local-cc", "na")

    created = orchard("nodepool", "create", "local-cc", "cpu-pool", "--config", files["nodepool"])
    assert ok(created) == "Created nodepool 'cpu-pool' in compute cluster 'local-cc'.\n"
    expected = ["cpu-pool", "local-cc", "local-cpu-1", "0", "2", "ready"]
    assert rows(ok(orchard("np", "ls"))) == [expected]
    assert rows(ok(orchard("np", "ls", "local-cc"))) == [expected]
    got = yaml.safe_load(ok(orchard("np", "get", "local-cc", "cpu-pool")))["nodepool"]
    assert got["compute_cluster"]["id"] == "local-cc"

    version = make_model(api, "m", "app")
    created = orchard(
        "deployment", "create", "cpu-pool", "echo-dep", "--config", files["deployment"]
    )
    assert ok(created) == "Created deployment 'echo-dep'.\n"
    expected = ["echo-dep", "m", version, "local-cc/cpu-pool", "0-3", "enabled"]
    assert rows(ok(orchard("dp", "ls")))[0][:6] == expected
    assert rows(ok(orchard("dp", "ls", "cpu-pool")))[0][:6] == expected
    assert ok(orchard("dp", "ls", "--page_no", "2", "--per_page", "1")).startswith("No deployments")
    got = yaml.safe_load(ok(orchard("dp", "get", "echo-dep")))["deployment"]
    assert got["nodepools"][0]["id"] == "cpu-pool"

    assert ok(orchard("dp", "rm", "echo-dep")) == (
        "Deleted deployment 'echo-dep': removed deployments: echo-dep.\n"
    )
    assert ok(orchard("np", "rm", "local-cc", "cpu-pool")).startswith(
        "Deleted nodepool 'cpu-pool' of compute cluster 'local-cc': removed"
    )
    assert ok(orchard("cc", "rm", "local-cc")).startswith("Deleted compute cluster 'local-cc': ")
    assert ok(orchard("cc", "ls")).startswith("No compute clusters")


def test_older_flag_forms(orchard, files, api):
    make_model(api, "m", "app")
    ok(orchard("cc", "create", "--config", files["cluster"], "-cc_id", "cc1"))
    ok(orchard("np", "create", "-cc_id", "cc1", "--config", files["nodepool"], "-np_id", "np1"))
    ok(orchard("dp", "create", "-np_id", "np1", "--config", files["deployment"], "-dpl_id", "d1"))
    assert rows(ok(orchard("dp", "ls", "--nodepool_id", "np1")))[0][0] == "d1"
    ok(orchard("dp", "delete", "-np_id", "np1", "-dpl_id", "d1"))
    ok(orchard("np", "delete", "--compute_cluster_id", "cc1", "--nodepool_id", "np1"))
    ok(orchard("cc", "delete", "--compute_cluster_id", "cc1"))


def test_failures_are_one_line_errors(orchard, files):
    assert "compute cluster 'ghost' not found" in error(orchard("cc", "get", "ghost"))
    assert "not found" in error(orchard("dp", "get", "ghost"))
    bad = files["cluster"].parent / "bad.yaml"
    bad.write_text("compute_cluster:\n  cloud_provider: {id: local}\n  regoin: na\n")
    line = error(orchard("cc", "create", "x", "--config", bad))
    assert "compute_cluster.regoin: unknown field" in line
    assert "config file not found" in error(orchard("cc", "create", "x", "--config", "nope.yaml"))


def test_pats(orchard):
    token = ok(orchard("pat", "create", "--description", "ci", "-q")).strip()
    listing = rows(ok(orchard("pat", "ls")))
    handle = next(row[0] for row in listing if "ci" in row)
    assert token and handle != token
    assert ok(orchard("pat", "rm", handle)).startswith(f"Deleted PAT '{handle}'")
    assert all(row[0] != handle for row in rows(ok(orchard("pat", "list"))))


# -- the SDK, as the seed's code uses it ---------------------------------------------------------


def test_seed_sdk_flow(server, files, api):
    version = make_model(api, "m", "app")
    auth = {"base_url": server.base_url, "pat": server.pat}
    user = User(user_id=server.user_id, **auth)
    cc = user.create_compute_cluster(
        config_filepath=str(files["cluster"]), compute_cluster_id="local-cc"
    )
    assert (cc.id, cc.region, cc.cloud_provider.id) == ("local-cc", "na", "local")

    cc = ComputeCluster(compute_cluster_id="local-cc", user_id=server.user_id, **auth)
    np = cc.create_nodepool(config_filepath=str(files["nodepool"]), nodepool_id="cpu-pool")
    assert (np.min_instances, np.max_instances) == (0, 2)
    assert [n.id for n in cc.list_nodepools()] == ["cpu-pool"]

    np = Nodepool(nodepool_id="cpu-pool", user_id=server.user_id, **auth)
    dep = np.create_deployment(config_filepath=str(files["deployment"]), deployment_id="echo-dep")
    assert dep.worker.model.model_version.id == version
    assert [d.id for d in np.list_deployments()] == ["echo-dep"]

    dep = Deployment(deployment_id="echo-dep", user_id=server.user_id, **auth)
    assert dep.autoscale_config.max_replicas == 3  # loaded lazily with GetDeployment
    with pytest.raises(errors.DeploymentConflict):
        np.create_deployment(config_filepath=str(files["deployment"]), deployment_id="again")

    assert "echo-dep" in np.delete_deployments(["echo-dep"]).details
    with pytest.raises(errors.DeploymentNotFound):
        np.deployment("echo-dep")
    user.delete_compute_clusters(["local-cc"])
    assert list(user.list_compute_clusters()) == []
    for client in (user, cc, np, dep):
        client.close()


# -- admin and catalogue -------------------------------------------------------------------


def test_user_create_gives_a_working_pat(server, orchard, tmp_path):
    created = CliRunner().invoke(
        cli, ["user", "create", "carol", "--home", str(server.settings.home)]
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.rsplit(" ", 1)[-1].strip()
    carol = User(user_id="carol", base_url=server.base_url, pat=token)
    assert carol.get_user_info().id == "carol"
    again = CliRunner().invoke(
        cli, ["user", "create", "carol", "--home", str(server.settings.home)]
    )
    assert again.exit_code == 1 and "already exists" in again.stderr
    nowhere = CliRunner().invoke(cli, ["user", "create", "dave", "--home", str(tmp_path / "empty")])
    assert nowhere.exit_code == 1 and "no Orchard state" in nowhere.stderr


def test_list_instances_shows_this_host(orchard):
    table = rows(ok(orchard("list-instances")))
    assert table[0][:3] == ["local", "local", "local-cpu-1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("compute_cluster:\n  region: [local\n", "YAML syntax error at line"),
        (
            "compute_cluster:\n  cloud_provider: {id: local}\n  region: 7\n",
            "compute_cluster.region: Input should be a valid string (got 7)",
        ),
        (
            "compute_cluster:\n  cloud_provider: {id: local}\n  region: local\n  colour: red\n",
            "compute_cluster.colour: unknown field; allowed here:",
        ),
        ("nodepool: {}\n", "the config must have a top-level 'compute_cluster:' key"),
    ],
)
def test_malformed_config_files_give_one_error_and_write_nothing(
    orchard, api, tmp_path, text, expected
):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert expected in error(orchard("cc", "create", "cc1", "--config", bad))
    assert list(api.call("ListComputeClusters").compute_clusters) == []
