"""Write docs/reference/options.md from the command line itself, so the page cannot drift from it.

    python scripts/docs_options.py            # rewrite the page
    python scripts/docs_options.py --check    # exit 1 when the page is out of date (tests/test_docs.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import typer

from litetext_convert.cli import app

PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "options.md"

HEADER = """# Every command's options

Generated from the command line by `scripts/docs_options.py` (do not edit by hand; `tests/test_docs.py`
fails when this page and `litetext COMMAND --help` disagree). Options hidden from the help (the old
names `-o/--output-dir` and `--converted`) still work and are left out. What the commands are for:
the [README](../../README.md#commands); the guides explain each option in context.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _names(param) -> str:
    if param.param_type_name == "argument":
        return f"`{param.name.upper()}` (positional)"
    names = [*param.opts, *param.secondary_opts]
    return " / ".join(f"`{name}`" for name in names)


def _default(param) -> str:
    if param.param_type_name == "argument" or param.default is None or getattr(param, "is_flag", False):
        return ""
    default = param.default
    if isinstance(default, (list, tuple)):
        return "" if not default else ", ".join(f"`{item}`" for item in default)
    return f"`{default}`"


def _rows(command) -> list[str]:
    rows = []
    for param in command.params:
        if getattr(param, "hidden", False) or param.name in ("help",):
            continue
        required = "yes" if param.required else ""
        help_text = getattr(param, "help", None) or ""
        rows.append(f"| {_names(param)} | {required} | {_default(param)} | {_cell(help_text)} |")
    return rows


def render() -> str:
    group = typer.main.get_command(app)
    parts = [HEADER]
    for name, command in group.commands.items():
        if command.hidden:
            continue
        parts.append(f"## `litetext {name}`\n")
        if command.help:
            parts.append(_cell(command.help.split("\n\n")[0]) + "\n")
        parts.append("| option | required | default | meaning |\n|---|---|---|---|")
        parts.append("\n".join(_rows(command)) + "\n")
    parts.append("Every command also takes `-h` / `--help`; `litetext --version` prints the version.\n")
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""
        if current != text:
            print(f"{PAGE} is out of date: run python scripts/docs_options.py", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
