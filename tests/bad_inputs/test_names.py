"""Hostile names through every command (issue 25, item 7): a checkpoint, folder, tensor, extra file
name, prompt or commit message holding a newline, ESC, C1, bidi or zero-width characters or Rich
markup reaches people escaped (terminal.shown), and --json readers get the exact string."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bad_inputs import corpus
from bad_inputs.common import HEADS, assert_one_line_error, folder_digest
from litetext_convert.errors import EXIT_BAD_INPUT, EXIT_PARITY_FAILED, LitetextError
from litetext_convert.terminal import markup_safe, shown

# One of each class; each is a fragment of a file name (no "/"), so Rich's closing tags are left to
# the prompts and commit messages, which are no paths.
HOSTILE = {
    "newline forging an error line": "a\nerror: forged",
    "carriage return": "a\rerror: overwritten",
    "ANSI escape": "a\x1b[31mred\x1b[0m",
    "C1 control (CSI)": "a\x9b31mred",
    "RTL override": "a\u202eevil",
    "bidi isolate": "a\u2066x\u2069",
    "zero-width and BOM": "a\u200bb\u200dc\ufeff",
    "Rich markup": "a[bold red]x",
}
# What must never reach a terminal raw (the markup is checked by its escaped form being shown).
RAW = ["\x1b", "\x9b", "\r", "\u202e", "\u2066", "\u2069", "\u200b", "\u200d", "\ufeff"]
ALL = "".join(HOSTILE.values())  # every class at once, for the commands that cost a conversion


# ---------------------------------------------------------------------------------------------
# The renderer itself


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("\x1b[31m", "\\x1b[31m"),
        ("\x00\x7f", "\\x00\\x7f"),
        ("\x85\x9b", "\\x85\\x9b"),
        ("\u202a\u202b\u202c\u202d\u202e", "\\u202a\\u202b\\u202c\\u202d\\u202e"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200b\u200c\u200d\u200e\u200f\u2060\ufeff", "\\u200b\\u200c\\u200d\\u200e\\u200f\\u2060\\ufeff"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\U000e0041", "\\U000e0041"),  # a tag character: invisible, format class
        ("\udc80", "\\udc80"),  # a byte of a file name that is not UTF-8
        ("a\tb", "a b"),
        ("café 日本 ✓ [bold]", "café 日本 ✓ [bold]"),  # ordinary text stays readable
    ],
)
def test_shown_makes_every_invisible_or_control_character_visible(text, expected):
    assert shown(text) == expected
    assert shown(shown(text)) == shown(text)  # escaping twice changes nothing (messages quote escaped names)


def test_markup_in_a_name_prints_literally():
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    name = "x[/bold] [red]y[/] \\"
    console.print(f"[bold]{markup_safe(name)}[/bold]")
    assert console.export_text().strip() == "x[/bold] [red]y[/] \\"


def test_a_message_quoting_a_name_is_one_line():
    message = LitetextError(f"cannot read {HOSTILE['newline forging an error line']}").one_line()
    assert "\n" not in message and "a\\nerror: forged" in message


# ---------------------------------------------------------------------------------------------
# Assertions


def assert_escaped(result, *names: str) -> None:
    """Nothing raw reached stdout or stderr, no line was forged, and each name is shown escaped."""
    text = result.stdout + result.stderr
    assert "Traceback" not in text and "internal error" not in text, result.stderr
    for char in RAW:
        assert char not in text, f"{char!r} reached the terminal raw"
    for stream in (result.stdout, result.stderr):
        forged = [line for line in stream.splitlines() if line.startswith("error: forged")]
        assert not forged, f"a name forged a line: {forged}"
    errors = [line for line in result.stderr_lines if line.startswith("error:")]
    assert len(errors) <= 1, result.stderr
    for name in names:
        assert shown(name) in text, f"{shown(name)!r} not shown"


def json_strings(data) -> list[str]:
    if isinstance(data, dict):
        return [s for key, value in data.items() for s in (json_strings(key) + json_strings(value))]
    if isinstance(data, list):
        return [s for value in data for s in json_strings(value)]
    return [data] if isinstance(data, str) else []


def assert_exact_in_json(result, *names: str) -> dict:
    data = json.loads(result.stdout)
    strings = json_strings(data)
    for name in names:
        assert any(name in s for s in strings), f"{name!r} not kept exactly in the JSON"
    for char in RAW:
        assert char not in result.stderr
    return data


@pytest.fixture
def wide(monkeypatch):
    """Names whole on one line (Rich reads COLUMNS when the command's console is made)."""
    monkeypatch.setenv("COLUMNS", "2000")


# ---------------------------------------------------------------------------------------------
# One line for each class (cheap: the error is raised before anything is read)


@pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_error_line_naming_a_hostile_checkpoint(ws, cli, name, as_json):
    missing = ws.inputs("names_missing") / f"{name}_ctx16.pt"
    result = cli("inspect", "-c", missing, *(["--json"] if as_json else []))
    line = assert_one_line_error(result, EXIT_BAD_INPUT, "checkpoint file not found", shown(missing))
    assert_escaped(result)
    if as_json:
        assert json.loads(result.stdout)["error"] == line.removeprefix("error: ")


@pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
def test_error_line_naming_a_hostile_folder(ws, cli, name):
    folder = ws.inputs("names_folders") / name
    folder.mkdir(exist_ok=True)
    result = cli("parity", folder)
    assert_one_line_error(result, EXIT_BAD_INPUT, shown(folder))
    assert_escaped(result)


# ---------------------------------------------------------------------------------------------
# Every class at once through each command, human and --json


@pytest.fixture(scope="module")
def hostile(ws) -> dict[str, Path]:
    """A good checkpoint under a hostile name, holding a tensor with a hostile key, converted into a
    hostile folder (once for the module; tests that add files work on copies)."""
    from conftest import run_cli

    root = ws.inputs("names_all")
    checkpoint = corpus.save_wrapped(root / f"tiny{ALL}_ctx16.pt", ws.state)
    folder = root / f"out{ALL}"
    if not folder.exists():
        result = run_cli(["convert", "-c", checkpoint, *HEADS, "--tokenizer", ws.tokenizer, folder])
        assert result.code == 0, result.stderr
    return {"checkpoint": checkpoint, "folder": folder, "root": root}


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_inspect_a_hostile_checkpoint(cli, wide, hostile, as_json):
    result = cli("inspect", "-c", hostile["checkpoint"], *HEADS, "--no-scan", *(["--json"] if as_json else []))
    assert result.code == 0, result.stderr
    assert_escaped(result, *([] if as_json else [hostile["checkpoint"].name]))
    if as_json:
        assert assert_exact_in_json(result, hostile["checkpoint"].name)["file"] == str(hostile["checkpoint"])


def test_inspect_a_hostile_tensor_key(ws, cli, wide):
    """A key nothing maps: named in the one error line, escaped, never a second line."""
    key = "detector." + ALL
    checkpoint = corpus.save_wrapped(ws.inputs("names_key") / "key_ctx16.pt", corpus.with_extra_key(ws.state, key))
    result = cli("inspect", "-c", checkpoint, *HEADS, "--no-scan")
    assert_one_line_error(result, EXIT_BAD_INPUT, "unmapped source key", shown(key))
    assert_escaped(result)


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_convert_into_a_hostile_folder(ws, cli, wide, hostile, as_json):
    folder = ws.fresh_parent("names_convert") / f"again{ALL}"
    result = cli("convert", "-c", hostile["checkpoint"], *HEADS, "--tokenizer", ws.tokenizer, folder,
                 *(["--json"] if as_json else []))
    assert result.code == 0, result.stderr
    if as_json:
        assert assert_exact_in_json(result, folder.name)["folder"] == str(folder)
        assert_escaped(result)
    else:
        assert_escaped(result, hostile["checkpoint"].name, folder.name)


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_parity_with_a_hostile_folder_and_prompt(ws, cli, wide, hostile, as_json):
    """Whether the two tokenizers agree on the control characters (exit 0) or not (exit 1, the prompt
    listed): every name and the prompt are shown escaped, and kept exactly in the JSON."""
    folder = ws.fresh_parent("names_parity") / hostile["folder"].name
    shutil.copytree(hostile["folder"], folder)
    prompt = "p" + ALL + " [/]"
    result = cli("parity", folder, "--prompt", prompt, *(["--json"] if as_json else []))
    assert result.code in (0, EXIT_PARITY_FAILED), result.stderr
    if as_json:
        assert_exact_in_json(result, prompt)
        assert_escaped(result)
    else:
        assert_escaped(result, folder.name)


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_audit_a_hostile_folder_with_a_hostile_prompt(cli, wide, hostile, as_json):
    prompt = "q" + ALL + " [/]"
    result = cli("audit", hostile["folder"], "-c", hostile["checkpoint"], *HEADS, "--prompt", prompt,
                 *(["--json"] if as_json else []))
    assert result.code in (0, EXIT_PARITY_FAILED), result.stderr
    if as_json:
        assert_exact_in_json(result, str(hostile["folder"]))
        assert_escaped(result)
    else:
        assert_escaped(result, hostile["folder"].name, hostile["checkpoint"].name)


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_push_plan_with_a_hostile_extra_file_and_commit_message(ws, cli, wide, fake_hub, no_credentials, hostile, as_json):
    folder = ws.fresh_parent("names_push") / hostile["folder"].name
    shutil.copytree(hostile["folder"], folder)
    (folder / f"notes{ALL}.txt").write_text("an extra file")
    before = folder_digest(folder)
    message = "m" + ALL + " [/]"
    result = cli("push", folder, "--dry-run", "--allow-unverified", "--repo-id", "alice/x", "--token", "hf_x" * 9,
                 "--commit-message", message, *(["--json"] if as_json else []))
    assert_escaped(result)
    if result.code == 0:
        if as_json:
            assert_exact_in_json(result, message)
        else:
            assert shown(message) in result.stdout
    else:  # a refusal naming the extra file is fine (the verified-files-only plan): one escaped line
        assert_one_line_error(result, EXIT_BAD_INPUT)
    assert folder_digest(folder) == before


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_convert_all_over_hostile_names(ws, cli, wide, hostile, as_json):
    source = ws.fresh_parent("names_all_source")
    shutil.copy(hostile["checkpoint"], source / hostile["checkpoint"].name)
    broken = source / f"broken{ALL}_ctx16.pt"
    broken.write_bytes(b"not a checkpoint")
    out = ws.fresh_parent("names_all_out")
    result = cli("convert-all", "--source", source, *HEADS, "--tokenizer", ws.tokenizer, out,
                 *(["--json"] if as_json else []))
    # The hostile stem may be refused as an output name too (convert-all names folders from plain stems):
    # either way, one line naming the broken file, escaped.
    assert_one_line_error(result, EXIT_BAD_INPUT, "of 2 checkpoints", shown(broken.name))
    assert_escaped(result)
    if as_json:
        assert_exact_in_json(result, broken.name, hostile["checkpoint"].name)
    else:
        assert shown(hostile["checkpoint"].name) in result.stdout
