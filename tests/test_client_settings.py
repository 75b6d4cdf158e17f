"""SDK settings and transport without a server: resolution order of base URL, PAT and user id;
base-URL parsing; the one RPC helper's error mapping; channel sharing; paging."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2

from orchard import errors
from orchard.client import User, contexts
from orchard.client.base import DEFAULT_BASE_URL, ENV_NAMES, resolve_settings
from orchard.client.channels import ChannelPool, Target, parse_base_url, translate_rpc_error
from orchard.client.lister import paginate


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ORCHARD_*/CLARIFAI_* settings from the outside; HOME is an empty folder."""
    for names in ENV_NAMES.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(contexts.CONFIG_ENV, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def write_contexts(path: Path, current: str = "main", **named: dict[str, str]) -> Path:
    cfg = contexts.ConfigFile(path=path, current_context=current)
    cfg.contexts = {name: contexts.Context(**body) for name, body in named.items()}
    contexts.write_config(cfg)
    return path


MAIN = {"base_url": "ctx-host:1", "pat": "ctx-pat", "user_id": "ctx-user"}
OTHER = {"base_url": "other-host:2", "pat": "other-pat", "user_id": "other-user"}


# -- resolution order ------------------------------------------------------------------------


def test_argument_beats_env_and_context(monkeypatch, isolated):
    write_contexts(isolated / ".config/orchard/config", main=MAIN)
    monkeypatch.setenv("ORCHARD_PAT", "env-pat")
    monkeypatch.setenv("ORCHARD_USER_ID", "env-user")
    monkeypatch.setenv("ORCHARD_API_BASE", "env-host:3")
    settings = resolve_settings("arg-host:4", "arg-pat", "arg-user")
    assert (settings.base_url, settings.pat, settings.user_id) == (
        "arg-host:4",
        "arg-pat",
        "arg-user",
    )
    assert set(settings.sources.values()) == {"argument"}


def test_orchard_env_beats_clarifai_env_beats_context(monkeypatch, isolated):
    write_contexts(isolated / ".config/orchard/config", main=MAIN)
    monkeypatch.setenv("CLARIFAI_PAT", "clarifai-pat")
    monkeypatch.setenv("CLARIFAI_USER_ID", "clarifai-user")
    monkeypatch.setenv("CLARIFAI_API_BASE", "clarifai-host:5")
    monkeypatch.setenv("ORCHARD_PAT", "orchard-pat")
    settings = resolve_settings()
    assert settings.pat == "orchard-pat"
    assert settings.user_id == "clarifai-user"
    assert settings.base_url == "clarifai-host:5"
    assert settings.sources["pat"] == "env ORCHARD_PAT"
    assert settings.sources["user_id"] == "env CLARIFAI_USER_ID"


def test_empty_env_values_are_ignored(monkeypatch):
    monkeypatch.setenv("ORCHARD_PAT", "")
    monkeypatch.setenv("CLARIFAI_PAT", "clarifai-pat")
    assert resolve_settings().pat == "clarifai-pat"


def test_current_context_of_default_config_file(isolated):
    write_contexts(isolated / ".config/orchard/config", main=MAIN, other=OTHER)
    settings = resolve_settings()
    assert (settings.base_url, settings.pat, settings.user_id) == (
        "ctx-host:1",
        "ctx-pat",
        "ctx-user",
    )


def test_context_fills_only_what_is_missing(monkeypatch, isolated):
    write_contexts(isolated / ".config/orchard/config", main=MAIN)
    monkeypatch.setenv("ORCHARD_USER_ID", "env-user")
    settings = resolve_settings(pat="arg-pat")
    assert (settings.base_url, settings.pat, settings.user_id) == (
        "ctx-host:1",
        "arg-pat",
        "env-user",
    )


def test_named_context_and_config_env(monkeypatch, tmp_path):
    path = write_contexts(tmp_path / "elsewhere.yaml", main=MAIN, other=OTHER)
    monkeypatch.setenv("ORCHARD_CONFIG", str(path))
    assert resolve_settings().pat == "ctx-pat"
    assert resolve_settings(context="other").pat == "other-pat"


def test_explicit_config_path_beats_config_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ORCHARD_CONFIG", str(write_contexts(tmp_path / "a", main=MAIN)))
    explicit = write_contexts(tmp_path / "b", main=OTHER)
    assert resolve_settings(config_path=explicit).pat == "other-pat"


def test_missing_named_context_is_a_user_error(isolated):
    write_contexts(isolated / ".config/orchard/config", main=MAIN)
    with pytest.raises(errors.UserError, match=r"context 'nope' not found .*known: main"):
        resolve_settings(pat="p", context="nope")


def test_defaults_without_a_config_file():
    settings = resolve_settings(pat="p")
    assert settings.base_url == DEFAULT_BASE_URL == "http://127.0.0.1:7600"
    assert settings.user_id is None  # asked of the server on first use
    assert settings.sources["base_url"] == "default"


def test_no_pat_says_how_to_provide_one(isolated):
    with pytest.raises(errors.UserError) as info:
        resolve_settings()
    message = str(info.value)
    assert "orchard login" in message and "ORCHARD_PAT" in message
    assert str(isolated / ".config/orchard/config") in message and "does not exist" in message


def test_config_file_is_written_private_with_parents(tmp_path):
    path = write_contexts(tmp_path / "deep/er/config", main=MAIN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert contexts.read_config(path).contexts["main"].pat == "ctx-pat"


def test_malformed_config_file_is_a_user_error(tmp_path):
    path = tmp_path / "config"
    path.write_text("contexts: [1, 2]\n")
    with pytest.raises(errors.UserError, match="'contexts' must be a mapping"):
        resolve_settings(config_path=path)
    path.write_text("contexts:\n  a: {base_url: x, token: y}\n")
    with pytest.raises(errors.UserError, match="context 'a' must hold only"):
        resolve_settings(config_path=path)


# -- base URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:7600", Target("127.0.0.1", 7600, False)),
        ("127.0.0.1:7600", Target("127.0.0.1", 7600, False)),
        ("localhost:80/", Target("localhost", 80, False)),
        ("http://orchard.local", Target("orchard.local", 80, False)),
        ("https://orchard.example.com", Target("orchard.example.com", 443, True)),
        ("https://orchard.example.com:8443", Target("orchard.example.com", 8443, True)),
        ("http://[::1]:7600", Target("::1", 7600, False)),
    ],
)
def test_base_url_forms(url, target):
    assert parse_base_url(url) == target


@pytest.mark.parametrize("url", ["orchard.local", "ftp://h:1", "http://:80", "h:port"])
def test_bad_base_urls(url):
    with pytest.raises(errors.UserError, match="invalid base URL"):
        parse_base_url(url)


def test_ipv6_address_is_bracketed():
    assert Target("::1", 7600, False).address == "[::1]:7600"


# -- the RPC helper ----------------------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "boom") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def with_method(client: Any, name: str, behaviour: Any) -> list[Any]:
    """Replace the wire method ``name`` of ``client``; returns the requests it receives."""
    seen: list[Any] = []

    def method(request: Any, metadata: Any, timeout: Any) -> Any:
        seen.append((request, metadata))
        if isinstance(behaviour, Exception):
            raise behaviour
        return behaviour

    client._methods[name] = method
    client._channel = object()  # no real channel is opened
    return seen


def test_construction_opens_nothing():
    user = User(pat="p")
    assert user._channel is None
    assert repr(user) == "User(user_id='(from PAT)', base_url='http://127.0.0.1:7600')"


def test_unavailable_becomes_unavailable_with_next_step():
    user = User(user_id="u", base_url="127.0.0.1:1", pat="p")
    with_method(user, "ListComputeClusters", FakeRpcError(grpc.StatusCode.UNAVAILABLE))
    with pytest.raises(errors.Unavailable) as info:
        list(user.list_compute_clusters())
    assert str(info.value) == (
        "cannot reach Orchard at 127.0.0.1:1; start it with `orchard serve` or check the base URL"
    )


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.Unavailable),
        (grpc.StatusCode.UNAUTHENTICATED, errors.AuthenticationError),
        (grpc.StatusCode.UNIMPLEMENTED, errors.NotImplementedByOrchard),
        (grpc.StatusCode.INTERNAL, errors.OrchardError),
    ],
)
def test_other_transport_failures_are_orchard_errors(code, cls):
    err = translate_rpc_error(FakeRpcError(code), "GetUser", Target("h", 1, False), 5.0)
    assert type(err) is cls


def test_response_status_becomes_its_error_class():
    user = User(user_id="u", pat="p")
    status = status_pb2.Status(
        code=status_code_pb2.COMPUTE_CLUSTER_DOES_NOT_EXIST, description="cc 'x' not found"
    )
    with_method(user, "ListComputeClusters", service_pb2.MultiComputeClusterResponse(status=status))
    with pytest.raises(errors.ComputeClusterNotFound, match="cc 'x' not found"):
        list(user.list_compute_clusters())


def test_user_id_is_resolved_lazily_once_with_me():
    user = User(pat="secret")
    answer = service_pb2.SingleUserResponse(
        status=status_pb2.Status(code=status_code_pb2.SUCCESS),
        user=resources_pb2.User(id="alice"),
    )
    seen = with_method(user, "GetUser", answer)
    assert user.user_id == "alice" and user.user_id == "alice"
    assert len(seen) == 1
    request, metadata = seen[0]
    assert request.user_app_id.user_id == "me"
    assert ("authorization", "Key secret") in metadata


# -- channels ----------------------------------------------------------------------------------


def test_channel_pool_shares_and_closes_with_last_user():
    pool = ChannelPool()
    target = Target("127.0.0.1", 1, False)
    first, second = pool.acquire(target), pool.acquire(target)
    assert first is second and pool.users(target) == 2
    pool.release(target)
    assert pool.users(target) == 1
    pool.release(target)
    assert pool.users(target) == 0
    pool.release(target)  # releasing an unknown target is harmless


def test_clients_share_a_channel_and_close_it(monkeypatch):
    from orchard.client import channels

    pool = ChannelPool()
    monkeypatch.setattr(channels, "POOL", pool)
    first = User(user_id="u", base_url="127.0.0.1:9", pat="p")
    second = User(user_id="u", base_url="http://127.0.0.1:9", pat="q")
    first._method("GetUser")
    second._method("GetUser")
    assert first._channel is second._channel
    with first:
        pass
    assert pool.users(first._target) == 1
    second.close()
    second.close()  # closing twice is harmless
    assert pool.users(first._target) == 0


# -- paging ------------------------------------------------------------------------------------


class Pages:
    def __init__(self, total: int) -> None:
        self.items = list(range(total))
        self.asked: list[tuple[int, int]] = []

    def __call__(self, page: int, per_page: int) -> list[int]:
        self.asked.append((page, per_page))
        return self.items[(page - 1) * per_page : page * per_page]


def test_walks_all_pages_until_a_short_one():
    pages = Pages(300)
    assert list(paginate(pages)) == list(range(300))
    assert pages.asked == [(1, 128), (2, 128), (3, 128)]


def test_stops_on_an_empty_page():
    pages = Pages(256)
    assert len(list(paginate(pages))) == 256
    assert pages.asked[-1] == (3, 128)


def test_one_page_when_asked():
    pages = Pages(100)
    assert list(paginate(pages, page_no=2, per_page=10)) == list(range(10, 20))
    assert list(paginate(pages, page_no=2)) == list(range(16, 32))
    assert list(paginate(pages, per_page=5)) == list(range(5))
    assert pages.asked == [(2, 10), (2, 16), (1, 5)]


def test_a_server_that_ignores_paging_does_not_loop():
    assert len(list(paginate(lambda page, per_page: list(range(500))))) == 500


@pytest.mark.parametrize("bad", [0, -1, "2", True])
def test_bad_page_arguments(bad):
    with pytest.raises(errors.UserError, match="must be a whole number >= 1"):
        paginate(Pages(1), page_no=bad)


def test_home_is_isolated(isolated):
    assert Path(os.path.expanduser("~")) == isolated
