"""The Hub transport (issue 25): against a real HTTP server on 127.0.0.1 that hangs, answers 500
or 429, or answers garbage, and against no server at all (offline), `push` ends in one line
within a bounded time: every request has timeouts (LITETEXT_HUB_TIMEOUT, set short here),
retries are bounded and quiet, `--json` stays clean, the folder is untouched. A download sent to
Xet storage (hf_xet's own client) whose endpoint hangs is bounded alike."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import types

import pytest

from bad_inputs.common import assert_one_line_error, folder_digest
from bad_inputs.hub_server import CAS_PREFIX, closed_port_url, fake_hub_server
from litetext_convert.errors import EXIT_BAD_INPUT
from litetext_convert import hub

TIMEOUT_S = 1  # per request phase; a retry never starts past 3 of them
BOUND_S = 20  # generous for a loaded CI machine: a hang once lasted until killed at 300 s


@pytest.fixture
def folder(verified, tmp_path):
    copy = tmp_path / "tiny_s0_ctx16"
    shutil.copytree(verified, copy)
    return copy


@pytest.fixture
def endpoint(monkeypatch, tmp_path):
    """Point huggingface_hub (and litetext's reachability probe) at `url`, with short timeouts.

    huggingface_hub asks the endpoint for its agent-harness registry and keeps the answer, in
    memory and for 24 h in HF_HOME, without checking its shape: a fake answer kept there breaks
    every later huggingface_hub call of every process. Both places are this test's own."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"), raising=False)
    monkeypatch.setattr(_detect_agent, "_registry", None, raising=False)

    monkeypatch.setenv(hub.TIMEOUT_ENV, str(TIMEOUT_S))
    monkeypatch.setenv("HF_TOKEN", "hf_" + "t" * 34)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.hub_reachable.cache_clear()

    def point_at(url: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", url)

    yield point_at
    hub.hub_reachable.cache_clear()


def _push(cli, folder, *extra):
    started = time.monotonic()
    result = cli("push", folder, "--repo-id", "alice/sam3-litetext-s0-ctx16", *extra)
    return result, time.monotonic() - started


CASES = {  # server mode -> fragment of the one line
    "hang": "(ReadTimeout)",
    "500": "could not be reached after",
    "429": "rate-limiting these requests (HTTP 429",
    "garbage": "answered with something its API does not promise",
    "shape": "answered with something its API does not promise",
    "redirect": "the Hub could not be reached (TooManyRedirects)",
}


@pytest.mark.parametrize("mode", list(CASES))
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_misbehaving_hub_is_one_line_in_bounded_time(cli, folder, endpoint, mode, as_json):
    before = folder_digest(folder)
    with fake_hub_server(mode) as server:
        endpoint(server.url)
        result, seconds = _push(cli, folder, *(["--json"] if as_json else []))

    assert_one_line_error(result, EXIT_BAD_INPUT, CASES[mode])
    assert seconds < BOUND_S, f"{seconds:.1f} s"
    # + 1: huggingface_hub's agent-registry request (not retried); a redirect loop stops at MAX_REDIRECTS
    hops = hub.MAX_REDIRECTS + 1 if mode == "redirect" else 1
    assert 1 <= server.requests <= (hub.MAX_ATTEMPTS + 1) * hops
    assert "Retrying" not in result.stdout + result.stderr and "HTTP Error" not in result.stderr
    if as_json:
        assert json.loads(result.stdout)["status"] == "failed"
    assert folder_digest(folder) == before


def test_offline_push_fails_at_once(cli, folder, endpoint):
    endpoint(closed_port_url())
    before = folder_digest(folder)

    result, seconds = _push(cli, folder)

    assert_one_line_error(result, EXIT_BAD_INPUT, "the Hub could not be reached (ConnectError)")
    assert seconds < 5, f"{seconds:.1f} s"  # once 11 lines of retries over 30 s
    assert folder_digest(folder) == before


def test_every_request_gets_the_timeouts_even_when_huggingface_hub_asks_for_none():
    """huggingface_hub passes timeout=None (no limit) for most API calls: the hook bounds them."""

    class Request:
        extensions = {"timeout": {"connect": None, "read": None, "write": 300.0, "pool": 0.5}}

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(hub.TIMEOUT_ENV, "7")
        hub._bound_timeouts(Request)
    assert Request.extensions["timeout"] == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 0.5}


@pytest.mark.parametrize("value", ["soon", "0", "-1", "1e9"])
def test_a_bad_timeout_setting_is_one_line(cli, folder, endpoint, value, monkeypatch):
    monkeypatch.setenv(hub.TIMEOUT_ENV, value)
    endpoint(closed_port_url())
    result, _ = _push(cli, folder)
    assert_one_line_error(result, EXIT_BAD_INPUT, hub.TIMEOUT_ENV)


@pytest.mark.parametrize("mode", ["hang", "garbage", "500"])
def test_audit_of_a_hub_repo_uses_the_same_transport_and_table(cli, ws, endpoint, mode, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with fake_hub_server(mode) as server:
        endpoint(server.url)
        started = time.monotonic()
        result = cli("audit", "someone/sam3-litetext-s0", "-c", ws.good, "--num-heads", "2")
        seconds = time.monotonic() - started

    assert_one_line_error(result, EXIT_BAD_INPUT)
    assert seconds < BOUND_S, f"{seconds:.1f} s"
    assert "Retrying" not in result.stderr
    assert not (tmp_path / "hub-cache").exists() or not any((tmp_path / "hub-cache").rglob("*.safetensors"))


# ---------------------------------------------------------------- Xet: hf_xet's own transport


def test_a_hanging_xet_endpoint_on_the_download_path_is_one_line_in_bounded_time(tmp_path):
    """The file's metadata sends the download to Xet storage, whose endpoint never answers. hf_xet
    alone waits 300 s per read and retries for up to 6 min (504 s measured against this server);
    with the limits litetext gives it, it gives up after its bounded retries and the failure is
    one line. In a process of its own: hf_xet reads its limits when its session is made, once."""
    from conftest import cli_env, run_cli_process

    env = {key: value for key, value in cli_env().items()
           if not key.startswith("HF_XET_") and key not in ("HF_HUB_DISABLE_XET", "HF_HUB_OFFLINE", "HF_ENDPOINT")}
    with fake_hub_server("xet") as server:
        env.update(HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf-home"), LITETEXT_HUB_TIMEOUT="1")
        env.pop("HF_TOKEN", None)
        started = time.monotonic()
        result = run_cli_process(["inspect", "-c", "someone/sam3-litetext:sam3_litetext_s0_ctx16.pt"], env=env, timeout=280)
        seconds = time.monotonic() - started

    assert_one_line_error(result, EXIT_BAD_INPUT, "the Hub's Xet storage did not complete the transfer")
    xet_requests = [path for path in server.paths if path.split()[1].startswith(CAS_PREFIX + "/v")]
    assert xet_requests, server.paths  # hf_xet itself was reached: this bound is its, not our client's
    assert len(xet_requests) <= hub.MAX_ATTEMPTS, server.paths  # its retries are litetext's
    assert seconds < 60, f"{seconds:.1f} s (process start included)"


@pytest.fixture
def xet_env(monkeypatch):
    """hf_xet's variables as the user left them (none), restored after the test."""
    from huggingface_hub import constants

    for name in hub.xet_limits():  # set, then deleted: monkeypatch then removes what bound_xet sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    monkeypatch.setenv(hub.TIMEOUT_ENV, "7")
    return constants


def test_xet_gets_the_hub_timeout_and_keeps_what_the_user_set(xet_env, monkeypatch):
    hf_xet = pytest.importorskip("hf_xet")
    monkeypatch.setenv("HF_XET_CLIENT_READ_TIMEOUT", "42s")  # the user's, left alone

    assert hub.bound_xet() is True
    config = hf_xet.XetConfig()
    assert config.get("client.connect_timeout").total_seconds() == 7
    assert config.get("client.retry_max_duration").total_seconds() == hub.RETRY_WINDOW * 7
    assert config.get("client.retry_max_attempts") == hub.MAX_ATTEMPTS - 1
    assert os.environ["HF_XET_CLIENT_READ_TIMEOUT"] == "42s" and config.get("client.read_timeout").total_seconds() == 42
    assert xet_env.HF_HUB_DISABLE_XET is False


def test_an_hf_xet_that_does_not_show_the_limits_is_switched_off(xet_env, monkeypatch):
    """No XetConfig to read the limits back from: Xet is off for the process, and huggingface_hub
    moves the bytes over litetext's bounded client instead."""
    monkeypatch.setitem(sys.modules, "hf_xet", types.ModuleType("hf_xet"))

    assert hub.bound_xet() is False
    assert xet_env.HF_HUB_DISABLE_XET is True
