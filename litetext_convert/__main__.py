"""`python -m litetext_convert` runs the `litetext` command line."""

from litetext_convert.cli import main

main()
