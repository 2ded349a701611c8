"""Publishing: plan, model card, refusal, idempotence, retries, error mapping and token hygiene.

No network: the Hub is an in-memory fake with the HfApi methods publish.py calls, and its errors
are real huggingface_hub exceptions built around hand-made HTTP responses.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeHub, NoNetwork, http_error  # the suite's one fake Hub and one NoNetwork
from huggingface_hub import ModelCard
from huggingface_hub.errors import (
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from litetext_convert.errors import EXIT_BAD_INPUT, EXIT_PARITY_FAILED, HubError
from litetext_convert.publish import push as publish
from litetext_convert.publish.model_card import render_model_card
from litetext_convert.targets import target
from litetext_convert.publish.push import (
    ACCESS_HINT,
    LOGIN_HINT,
    MAX_ATTEMPTS,
    FileDigest,
    PushOptions,
    backoff_delay,
    digest_bytes,
    files_to_upload,
    plan_push,
    push_folder,
    redact,
    render_plan,
)

_http = publish._http
TOKEN = "hf_SecretSecretSecretSecretSecret1234"
REPO = "alice/sam3-litetext-s0-ctx16"
SOURCE_SHA = "ab" * 32

PARITY = {
    "tool": {"name": "litetext", "version": "0.1.0"},
    "schema": 2,
    "prompt_set": "default",
    "first_failure": None,
    "precision": {"dtype": "float32", "reduced": False,
                  "exactness": {"passed": True, "tensors": {"passed": True, "checked": 3, "planned": 3, "dtype": "float32",
                                                            "mismatched": 0, "mismatches": []}}},
    "passed": True,
    "scope": "text",
    "dtype": "float32",
    "atol": 1e-5,
    "rtol": 1e-5,
    "original": {"name": "clean-room reference (litetext_convert.reference)", "version": "0.1.0"},
    "inputs": {"kind": "dummy ids", "batch": 2, "seed": 0, "context_length": 16},
    "stages": [
        {"name": "text.embeddings", "max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0, "passed": True},
        {"name": "text.encoder.layers.0", "max_abs": 1.19e-07, "mean_abs": 2.5e-08, "cosine": 0.99999994,
         "passed": True},
        {"name": "text.pooler_output", "max_abs": 4.77e-07, "mean_abs": 6.1e-08, "cosine": 0.9999999, "passed": True},
    ],
    "notes": ["tokenizer compared on 3 prompts"],
}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_ambient_credentials(no_credentials):
    """No real token or login cache may leak into, or be read by, these tests."""


def make_folder(root: Path, *, parity: dict | None | str = "default") -> Path:
    folder = root / "sam3-litetext-s0-ctx16"
    folder.mkdir()
    config = {
        "model_type": "sam3_lite_text",
        "text_config": {
            "hidden_size": 512, "num_hidden_layers": 4, "max_position_embeddings": 16, "use_repmixer_blocks": True
        },
    }
    files = {
        "config.json": json.dumps(config),
        "model.safetensors": "weights" * 500,
        "tokenizer.json": '{"model": {}}',
        "preprocessor_config.json": "{}",
        "processor_config.json": "{}",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    conversion = {
        "tool": {"name": "litetext", "version": "0.1.0"},
        "source": {
            "repo_id": "Simon7108528/EfficientSAM3",
            "filename": "sam3_litetext/efficient_sam3_image_encoder_mobileclip_s0_ctx16.pt",
            "revision": "main",
            "local_path": "/cache/x.pt",
            "sha256": SOURCE_SHA,
            "bytes": 123456,
            "license": "apache-2.0",
        },
        "variant": "s0",
        "context_length": 16,
        "architecture": {
            "text": {
                "hidden_size": {"value": 512, "source": "weights"},
                "use_repmixer_blocks": {"value": True, "source": "variant table"},
            },
            "detector": {"num_queries": {"value": 200, "source": "weights"}},
        },
        "keys": {"source": 1281, "mapped": 970, "dropped": {"unused teacher": 311}, "target": 1204},
        "dtype": "float32",
        "created": "2026-01-01T00:00:00+00:00",
    }
    (folder / "conversion_record.json").write_text(json.dumps(conversion))
    if parity == "default":
        parity = PARITY
    if parity is not None:
        (folder / "parity_record.json").write_text(json.dumps(parity))
        rebind(folder)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "ignored").write_text("local state, never published")
    return folder


def rebind(folder: Path) -> None:
    """What a parity run does: bind the record to the folder's files as they are now (by sha256)."""
    from litetext_convert.folder.content import binding
    from litetext_convert.folder.records import read_conversion_record

    from litetext_convert.folder.records import record_digest

    path = folder / "parity_record.json"
    record = {**json.loads(path.read_text()), "verified": binding(folder, read_conversion_record(folder))}
    path.write_text(json.dumps({**record, "digest": record_digest(record)}))


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path)


def options(**overrides: Any) -> PushOptions:
    return PushOptions(**{"repo_id": REPO, "token": TOKEN, **overrides})


def no_sleep(_: float) -> None:
    pass


# ---------------------------------------------------------------- dry run


def test_dry_run_plan_lists_exact_files_sizes_and_hashes_without_network(folder):
    result = push_folder(folder, options(dry_run=True), api=NoNetwork())

    assert result.status == "planned"
    plan = result.to_json()["plan"]
    expected_paths = sorted(
        ["README.md", "config.json", "conversion_record.json", "model.safetensors", "parity_record.json",
         "preprocessor_config.json", "processor_config.json", "tokenizer.json"]
    )
    assert [f["path"] for f in plan["files"]] == expected_paths  # hidden .cache/ is not published
    card = render_model_card(folder, repo_id=REPO).encode()
    for entry in plan["files"]:
        data = card if entry["path"] == "README.md" else (folder / entry["path"]).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["action"] == "upload"
    assert plan["repo_id"] == REPO and plan["branch"] == "main"
    assert plan["create_repo"] == "if missing" and plan["remote_checked"] is False
    assert not (folder / "README.md").exists()  # a dry run writes nothing either


def test_dry_run_without_repo_id_uses_a_marked_placeholder_user(folder):
    plan = plan_push(folder, PushOptions(dry_run=True), api=NoNetwork())

    assert plan.repo_id == "<your-hub-user>/sam3-litetext-s0-ctx16"
    assert any("--repo-id" in note for note in plan.notes)
    text = render_plan(plan)
    assert "model.safetensors" in text and plan.files[0].sha256 in text


# ---------------------------------------------------------------- model card


def test_card_metadata_source_parity_table_and_usage(folder):
    card = ModelCard(render_model_card(folder, repo_id=REPO))
    data = card.data

    assert data.library_name == "transformers"
    assert data.pipeline_tag == "mask-generation"
    assert data.license == "apache-2.0"
    assert data.base_model == "Simon7108528/EfficientSAM3"
    assert "sam3_lite_text" in data.tags and "unverified" not in data.tags

    text = card.text
    assert SOURCE_SHA in text and "efficient_sam3_image_encoder_mobileclip_s0_ctx16.pt" in text
    assert "clean-room reference (litetext_convert.reference)" in text
    assert "atol=1.00e-05, rtol=1.00e-05" in text and "Result: **passed**" in text
    assert "scope: text encoder only" in text
    assert "| `text.embeddings` | 0 | 0 | 1.00000000 | pass |" in text
    assert "| `text.encoder.layers.0` | 1.19e-07 | 2.50e-08 | 0.99999994 | pass |" in text
    assert "| `text.pooler_output` | 4.77e-07 | 6.10e-08 | 0.99999990 | pass |" in text
    assert "hidden size 512, 4 layers, context 16 tokens, RepMixer blocks: yes" in text
    assert "Unverified" not in text


def test_card_shows_tokenizer_and_whole_detector_results(tmp_path):
    detector = {
        "passed": True,
        "original": "efficientsam3 upstream",
        "stages": [{"name": "detector.pred_masks", "max_abs": 3.2e-06, "mean_abs": 1e-07, "cosine": 1.0, "passed": True}],
    }
    folder = make_folder(tmp_path, parity={**PARITY, "scope": "all", "tokenizer": {"equal": True}, "detector": detector})
    text = render_model_card(folder, repo_id=REPO)

    assert "Tokenizer: ids identical to the original's." in text
    assert "Whole detector compared with **efficientsam3 upstream**: **passed**." in text
    assert "| `detector.pred_masks` | 3.20e-06 | 1.00e-07 | 1.00000000 | pass |" in text


def test_usage_snippet_is_valid_python_using_the_model_and_processor(folder):
    snippet = target("image").usage_snippet(REPO)
    compile(snippet, "usage.py", "exec")
    assert f'Sam3LiteTextModel.from_pretrained("{REPO}")' in snippet
    assert f'AutoProcessor.from_pretrained("{REPO}")' in snippet
    assert "post_process_instance_segmentation" in snippet and 'text="cat"' in snippet
    assert f"```python\n{snippet}```" in render_model_card(folder, repo_id=REPO)


def test_card_without_license_omits_it_rather_than_guess(folder):
    record = json.loads((folder / "conversion_record.json").read_text())
    record["source"]["license"] = None
    (folder / "conversion_record.json").write_text(json.dumps(record))
    rebind(folder)  # the record names the conversion it belongs to by digest

    card = ModelCard(render_model_card(folder, repo_id=REPO))
    assert card.data.license is None and "not recorded" in card.text


# ---------------------------------------------------------------- refusal


def test_no_parity_record_is_refused(tmp_path):
    folder = make_folder(tmp_path, parity=None)
    result = push_folder(folder, options(), api=NoNetwork())

    assert result.status == "refused" and result.exit_code == EXIT_BAD_INPUT
    assert "no parity record" in result.message and "--allow-unverified" in result.message


@pytest.mark.parametrize(
    "parity, reason, code",
    [
        ({**PARITY, "passed": False}, "its checks all pass: it was edited", EXIT_BAD_INPUT),
        ({**PARITY, "stages": [{**PARITY["stages"][0], "passed": False}]}, "check failed at text.embeddings", EXIT_PARITY_FAILED),
        ({**PARITY, "inputs": {**PARITY["inputs"], "context_length": 32}}, "context 32", EXIT_PARITY_FAILED),
        ({**PARITY, "detector": {"passed": False, "stages": [{"name": "detector.masks", "passed": False}]}},
         "check failed at detector.masks", EXIT_PARITY_FAILED),
        ({**PARITY, "precision": {**PARITY["precision"], "exactness": {"passed": False, "tensors": {"passed": False}}}},
         "check failed at tensors (not the cast source, bit for bit)", EXIT_PARITY_FAILED),
    ],
)
def test_failing_or_foreign_parity_record_is_refused(tmp_path, parity, reason, code):
    folder = make_folder(tmp_path, parity=parity)
    result = push_folder(folder, options(), api=NoNetwork())

    assert result.status == "refused" and result.exit_code == code
    assert reason in result.message


def test_allow_unverified_publishes_with_a_prominent_warning(tmp_path):
    folder = make_folder(tmp_path, parity=None)
    result = push_folder(folder, options(dry_run=True, allow_unverified=True), api=NoNetwork())

    assert result.status == "planned" and result.plan.verified is False
    card = ModelCard(result.plan.card)
    assert "unverified" in card.data.tags
    banner = card.text.split("## ")[0]  # before the first section: the top of the card
    assert "**Unverified conversion.**" in banner and "--allow-unverified" in banner


def test_incomplete_folder_is_refused(folder):
    (folder / "model.safetensors").unlink()
    result = push_folder(folder, options(dry_run=True), api=NoNetwork())
    assert result.status == "refused" and "model.safetensors was verified" in result.message
    assert "no longer in the folder" in result.message


# ---------------------------------------------------------------- idempotence


def test_files_to_upload_compares_lfs_by_sha256_and_small_files_by_git_sha1():
    weights, config = digest_bytes(b"w" * 100), digest_bytes(b"{}")
    local = {"model.safetensors": weights, "config.json": config, "new.json": digest_bytes(b"x")}

    same = {
        "model.safetensors": FileDigest(100, weights.sha256, "pointer-sha1"),
        "config.json": FileDigest(2, None, config.git_sha1),
    }
    assert files_to_upload(local, same) == ["new.json"]

    changed = {
        "model.safetensors": FileDigest(100, "0" * 64, "pointer-sha1"),
        "config.json": FileDigest(2, None, "0" * 40),
        "new.json": FileDigest(5, None, digest_bytes(b"x").git_sha1),  # size differs
    }
    assert files_to_upload(local, changed) == ["config.json", "model.safetensors", "new.json"]
    assert files_to_upload(local, {}) == ["config.json", "model.safetensors", "new.json"]


def test_files_to_upload_takes_plain_tuples():
    local = {"a.json": (2, "s" * 64, "g" * 40), "b.json": (3, "t" * 64, "h" * 40)}
    remote = {"a.json": (2, None, "g" * 40), "b.json": (3, None, "x" * 40)}
    assert files_to_upload(local, remote) == ["b.json"]


def test_second_push_sends_nothing_and_makes_no_commit(folder):
    hub = FakeHub()
    first = push_folder(folder, options(), api=hub, sleep=no_sleep)

    assert first.status == "pushed" and first.plan.repo_creation == "yes"
    assert first.files_sent == [f.path for f in first.plan.files]
    assert (folder / "README.md").read_text() == first.plan.card  # the folder keeps its card
    assert hub.repos[REPO]["main"]["README.md"] == first.plan.card.encode()

    second = push_folder(folder, options(), api=hub, sleep=no_sleep)
    assert second.status == "unchanged" and second.files_sent == []
    assert hub.calls.count("create_commit") == 1 and hub.calls.count("create_repo") == 1


def test_only_changed_files_are_sent_and_remote_extras_are_reported(folder):
    hub = FakeHub()
    push_folder(folder, options(), api=hub, sleep=no_sleep)
    hub.repos[REPO]["main"]["model-00002-of-00002.safetensors"] = b"stale shard"
    (folder / "tokenizer.json").write_text('{"model": {"changed": true}}')
    rebind(folder)  # a parity run verified the new file

    result = push_folder(folder, options(), api=hub, sleep=no_sleep)
    changed = ["README.md", "parity_record.json", "tokenizer.json"]  # the card and the record name the new digest
    assert result.status == "pushed" and result.files_sent == changed
    assert hub.last_commit.paths == changed
    assert result.plan.remote_only == ["model-00002-of-00002.safetensors"]


def test_new_branch_private_repo_and_pull_request(folder):
    hub = FakeHub()
    result = push_folder(folder, options(private=True, revision="v1", create_pr=True, commit_message="hello"), api=hub)

    assert result.status == "pushed" and result.pr_url.endswith("/discussions/1")
    assert hub.calls[:3] == ["list_repo_tree", "create_repo", "create_branch"]
    assert hub.private is True and hub.last_commit.message == "hello"


def test_private_is_refused_for_an_existing_public_repo(folder):
    hub = FakeHub()
    push_folder(folder, options(), api=hub, sleep=no_sleep)  # creates it public
    (folder / "tokenizer.json").write_text('{"changed": 1}')
    rebind(folder)

    result = push_folder(folder, options(private=True), api=hub, sleep=no_sleep)
    assert result.status == "refused" and "is public" in result.message
    assert hub.calls.count("create_commit") == 1


def test_default_repo_id_comes_from_whoami(folder):
    hub = FakeHub(user="bob")
    result = push_folder(folder, options(repo_id=None), api=hub, sleep=no_sleep)
    assert result.repo_id == "bob/sam3-litetext-s0-ctx16" and "bob/sam3-litetext-s0-ctx16" in hub.repos


# ---------------------------------------------------------------- retries


def test_transient_503_is_retried_with_backoff_then_succeeds(folder):
    hub = FakeHub()
    hub.failures["create_commit"] = [http_error(503)]
    sleeps: list[float] = []
    result = push_folder(folder, options(), api=hub, sleep=sleeps.append)

    assert result.status == "pushed" and sleeps == [1.0]
    assert hub.calls.count("create_commit") == 2


def test_gives_up_after_bounded_attempts_with_one_line_error(folder):
    hub = FakeHub()
    hub.broken["create_commit"] = http_error(503)
    sleeps: list[float] = []
    result = push_folder(folder, options(), api=hub, sleep=sleeps.append)

    assert result.status == "failed" and isinstance(result.error, HubError)
    assert hub.calls.count("create_commit") == MAX_ATTEMPTS
    assert sleeps == [backoff_delay(n) for n in range(1, MAX_ATTEMPTS)] == [1.0, 2.0, 4.0]
    assert "\n" not in result.message and f"after {MAX_ATTEMPTS} attempts (HTTP 503)" in result.message


def test_backoff_is_capped():
    assert backoff_delay(1) == 1.0 and backoff_delay(20) == publish.MAX_DELAY_S


# ---------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    "error, expected",
    [
        (lambda: http_error(401), LOGIN_HINT),
        (lambda: http_error(403, server_message="You don't have the rights to create a model here"), ACCESS_HINT),
        (lambda: http_error(404, RepositoryNotFoundError), ACCESS_HINT),
        (lambda: http_error(429), "rate-limiting these requests (HTTP 429, 4 attempts)"),
        (lambda: _http.ConnectError("[Errno 101] Network is unreachable"), "could not be reached"),
        (lambda: _http.ReadTimeout("timed out"), "could not be reached"),
        (lambda: OfflineModeIsEnabled("offline"), "HF_HUB_OFFLINE"),
    ],
)
def test_hub_failures_become_one_line_hub_errors_with_the_fix(folder, error, expected):
    hub = FakeHub()
    hub.broken["create_commit"] = error()
    result = push_folder(folder, options(), api=hub, sleep=no_sleep)

    assert result.status == "failed" and isinstance(result.error, HubError)
    assert expected in result.message and "\n" not in result.message
    assert result.message == result.error.one_line()


def test_client_errors_are_not_retried(folder):
    hub = FakeHub()
    hub.failures["create_commit"] = [http_error(403)]
    sleeps: list[float] = []
    push_folder(folder, options(), api=hub, sleep=sleeps.append)
    assert sleeps == [] and hub.calls.count("create_commit") == 1


def test_unauthenticated_listing_is_a_login_hint_not_a_missing_repo(folder):
    hub = FakeHub()
    hub.broken["list_repo_tree"] = http_error(401, RepositoryNotFoundError)
    result = push_folder(folder, options(), api=hub, sleep=no_sleep)
    assert result.status == "failed" and LOGIN_HINT in result.message and "create_repo" not in hub.calls


def test_invalid_token_at_whoami_is_a_login_hint(folder):
    hub = FakeHub()
    hub.failures["whoami"] = [http_error(401)]
    result = push_folder(folder, options(repo_id=None), api=hub, sleep=no_sleep)
    assert result.status == "failed" and LOGIN_HINT in result.message


def test_plan_push_raises_hub_error_not_library_errors(folder):
    hub = FakeHub()
    hub.broken["list_repo_tree"] = http_error(500)
    with pytest.raises(HubError, match="could not be reached"):
        plan_push(folder, options(), api=hub, sleep=no_sleep)


def test_bad_repo_id_is_a_hub_error_before_any_call(folder):
    hub = FakeHub()
    result = push_folder(folder, options(repo_id="not a repo"), api=hub)
    assert result.status == "failed" and "ORG/NAME" in result.message and hub.calls == []


# ---------------------------------------------------------------- token hygiene


def test_token_never_appears_even_when_the_hub_echoes_it(folder, monkeypatch):
    ambient = "hf_AmbientAmbientAmbientAmbient99"
    monkeypatch.setenv("HF_TOKEN", ambient)
    hub = FakeHub()
    hub.failures["create_commit"] = [http_error(403, server_message=f"token {TOKEN} / {ambient} may not write")]
    opts = options()
    result = push_folder(folder, opts, api=hub, sleep=no_sleep)

    assert result.status == "failed"
    outputs = [
        result.message,
        str(result.error),
        result.error.one_line(),
        json.dumps(result.to_json()),
        json.dumps(opts.to_json()),
        repr(opts),
        repr(result),
        render_plan(result.plan),
        json.dumps(result.plan.to_json()),
        "".join(traceback.format_exception(result.error)),  # what a crash handler would print
    ]
    for text in outputs:
        assert TOKEN not in text and ambient not in text
    assert "may not write" in result.message  # the server's explanation survives, minus the secret


def test_redact_removes_the_given_token_and_token_shaped_strings():
    assert redact(f"bad {TOKEN}", TOKEN) == "bad ***"
    assert redact("abc secret-123 def", "secret-123") == "abc *** def"
    assert redact("cached hf_0123456789abcdefghijKLMNOP here", None) == "cached *** here"
    assert redact("see hf_hub_download", None) == "see hf_hub_download"


@pytest.mark.parametrize("swap", ["rewritten", "symbolic link"])
def test_a_file_changed_between_plan_and_send_is_never_sent(folder, tmp_path, swap):
    """The bytes sent are the bytes verified: the digest of what is read at send time must be the plan's."""
    secret = tmp_path / "token"
    secret.write_text("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")

    class SwappingHub(FakeHub):
        def create_repo(self, repo_id, **kwargs):  # after the plan, before the commit
            super().create_repo(repo_id, **kwargs)
            (folder / "tokenizer.json").unlink()
            if swap == "rewritten":
                (folder / "tokenizer.json").write_text('{"model": {"swapped": true}}')
            else:
                (folder / "tokenizer.json").symlink_to(secret)

    hub = SwappingHub()
    result = push_folder(folder, options(), api=hub, sleep=no_sleep)

    assert result.status == "refused" and result.exit_code == EXIT_BAD_INPUT
    assert "tokenizer.json changed after it was verified" in result.message
    assert "create_commit" not in hub.calls
