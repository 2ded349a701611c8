"""`python -m litetext_convert.cli` runs the same app as the `litetext` script."""

from litetext_convert.cli import run

run()
