"""`python -m streams` is the `gristmill` command."""

from streams.cli import main

main()
