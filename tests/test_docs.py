"""The docs hold together: every relative link resolves (the file, and its #anchor to a heading), the
README stays a front door, every page is reachable from the index, and the options reference is the
command line's own."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Pages other branches add (linked already, written there). The coordinator empties this set at merge.
PENDING = {

}

README_MAX_LINES = 200

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _prose(text: str) -> str:
    """The text without code: a link-looking string inside a code block is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped (not - or _), spaces to -, repeats numbered."""
    anchors: set[str] = set()
    for line in FENCE.sub("", text).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def relative_links(path: Path) -> list[str]:
    links = LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link)]  # http:, mailto:, ...


def link_problems(path: Path) -> list[str]:
    problems = []
    for link in relative_links(path):
        target, _, anchor = link.partition("#")
        resolved = (path.parent / target).resolve() if target else path
        name = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(resolved)
        if name in PENDING:
            continue
        if not resolved.exists():
            problems.append(f"{link}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{link}: no heading with anchor #{anchor} in {name}")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    assert link_problems(path) == []


def test_the_link_check_catches_a_broken_file_and_a_broken_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n\n## Set-up: two `commands`\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md) [ok](a.md#set-up-two-commands) [ok](#here) [web](https://x.y/z)\n"
        "```\n[in code](nowhere.md)\n```\n## Here\n"
        "[gone](missing.md) [bad anchor](a.md#setup)\n",
        encoding="utf-8",
    )
    assert link_problems(page) == ["missing.md: no such file", "a.md#setup: no heading with anchor #setup in a.md"]


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_docs_page_is_listed_in_the_index():
    index = ROOT / "docs" / "README.md"
    linked = {(index.parent / link.partition("#")[0]).resolve() for link in relative_links(index)}
    pages = {page.resolve() for page in (ROOT / "docs").rglob("*.md")} - {index.resolve()}
    assert sorted(p.relative_to(ROOT).as_posix() for p in pages - linked) == []


def test_the_options_reference_is_the_command_lines_own():
    spec = importlib.util.spec_from_file_location("docs_options", ROOT / "scripts" / "docs_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = (ROOT / "docs" / "reference" / "options.md").read_text(encoding="utf-8")
    assert written == module.render(), "docs/reference/options.md is out of date: run python scripts/docs_options.py"
