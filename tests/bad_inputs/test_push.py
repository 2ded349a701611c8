"""Bad inputs through `litetext push` (a fake Hub; no network)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import http_error

from bad_inputs.common import (
    Workspace,
    assert_one_line_error,
    folder_digest,
)
from litetext_convert.errors import (
    EXIT_BAD_INPUT,
)
from litetext_convert.publish import push as publish

# ---------------------------------------------------------------------------------------------
# 9. push: the Hub's failures, mapped to one line (a fake HfApi; no network)


def _hub_failures():
    from huggingface_hub.errors import RepositoryNotFoundError

    return {
        "401": (lambda: http_error(401), [], publish.LOGIN_HINT),
        "404": (lambda: http_error(404, RepositoryNotFoundError), ["--repo-id", "alice/sam3-litetext-s0-ctx16"], "404"),
        "network error": (lambda: publish._http.ConnectError("[Errno 101] Network is unreachable"), [], "could not be reached"),
    }


def _copy_of(verified: Path, ws: Workspace) -> Path:
    """Each push test gets its own copy: a failed push may write README.md (see below)."""
    folder = ws.fresh_parent("push") / verified.name
    shutil.copytree(verified, folder)
    return folder


@pytest.mark.parametrize("failure", ["401", "404", "network error"])
def test_push_hub_failure_is_one_line(ws, verified, cli, fake_hub, no_credentials, failure):
    make_error, extra, fragment = _hub_failures()[failure]
    hub = fake_hub
    hub.down = make_error()
    folder = _copy_of(verified, ws)
    before = folder_digest(folder)

    result = cli("push", folder, "--token", "hf_NotARealTokenNotARealToken1234", *extra)

    assert_one_line_error(result, EXIT_BAD_INPUT, fragment)
    assert "hf_NotARealToken" not in result.stdout + result.stderr
    assert hub.calls, "the fake Hub was never called"
    assert folder_digest(folder) == before  # the folder's own README.md (its card) included


def test_failed_push_leaves_the_folder_as_it_was(ws, verified, cli, fake_hub, no_credentials):
    from huggingface_hub.errors import RepositoryNotFoundError

    folder = _copy_of(verified, ws)
    fake_hub.down = http_error(404, RepositoryNotFoundError)
    before = folder_digest(folder)
    result = cli("push", folder, "--repo-id", "alice/sam3-litetext-s0-ctx16", "--token", "hf_NotARealTokenNotARealToken1234")
    assert result.code == EXIT_BAD_INPUT
    assert folder_digest(folder) == before


def test_push_without_any_token(ws, verified, cli, no_credentials):
    """The real HfApi with no token anywhere: whoami refuses before any request."""
    folder = _copy_of(verified, ws)
    before = folder_digest(folder)
    result = cli("push", folder)
    assert_one_line_error(result, EXIT_BAD_INPUT, "401", publish.LOGIN_HINT)
    assert folder_digest(folder) == before


def test_push_unverified_folder_is_refused(ws, cli, sharded_folder, no_credentials):
    result = cli("push", sharded_folder, "--dry-run")
    assert_one_line_error(result, EXIT_BAD_INPUT, "refusing to publish", "parity")


def test_push_folder_that_is_not_converted(ws, cli, no_credentials):
    folder = ws.inputs("not_converted")
    result = cli("push", folder, "--dry-run")
    assert_one_line_error(result, EXIT_BAD_INPUT)


# ---------------------------------------------------------------------------------------------
# Only regular files inside the folder are published


@pytest.mark.parametrize("kind", ["link to a token", "link to a folder", "FIFO", "hard link to a token"])
def test_push_leaves_out_what_was_not_verified(ws, verified, cli, fake_hub, no_credentials, kind):
    """Push publishes exactly what the records verified: an extra link, FIFO or hard link is named as
    left out and never uploaded (nothing is followed, nothing is read from a FIFO)."""
    folder = _copy_of(verified, ws)
    secret = folder.parent / "token"
    secret.write_text("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")
    if kind == "link to a token":
        (folder / "notes.txt").symlink_to(secret)
    elif kind == "link to a folder":
        (folder / "extras").symlink_to(folder.parent)
    elif kind == "hard link to a token":
        os.link(secret, folder / "notes.txt")
    else:
        os.mkfifo(folder / "notes.txt")
    name = "extras" if kind == "link to a folder" else "notes.txt"

    result = cli("push", folder, "--repo-id", "alice/sam3-litetext-s0-ctx16", "--token", "hf_NotARealTokenNotARealToken1234")

    assert result.code == 0, result.stderr
    assert f"left out (not verified, never uploaded): {name}" in result.stdout
    assert name not in fake_hub.last_commit.paths and "config.json" in fake_hub.last_commit.paths
    assert "hf_TheUsersRealToken" not in result.stdout + result.stderr


@pytest.mark.parametrize("kind", ["symbolic link", "hard link"])
def test_push_refuses_a_verified_file_turned_into_a_link(ws, verified, cli, fake_hub, no_credentials, kind):
    folder = _copy_of(verified, ws)
    outside = folder.parent / "config-outside.json"
    os.replace(folder / "config.json", outside)
    if kind == "symbolic link":
        (folder / "config.json").symlink_to(outside)
    else:
        os.link(outside, folder / "config.json")

    result = cli("push", folder, "--repo-id", "alice/sam3-litetext-s0-ctx16", "--token", "hf_NotARealTokenNotARealToken1234")

    fragments = ("config.json is a symbolic link",) if kind == "symbolic link" else ("refusing to publish", "config.json", "2 hard links")
    assert_one_line_error(result, EXIT_BAD_INPUT, *fragments)
    assert "create_commit" not in fake_hub.calls


def test_push_never_replaces_a_readme_the_user_wrote(ws, verified, cli, fake_hub, no_credentials):
    folder = _copy_of(verified, ws)
    (folder / "README.md").write_text("# My own notes\n")
    before = folder_digest(folder)

    result = cli("push", folder, "--repo-id", "alice/sam3-litetext-s0-ctx16", "--token", "hf_NotARealTokenNotARealToken1234")

    assert_one_line_error(result, EXIT_BAD_INPUT, "README.md was not written by litetext")
    assert folder_digest(folder) == before and "create_commit" not in fake_hub.calls
