"""`python -m moments.cli` runs the CLI, as `python -m moments` does."""

from moments.cli import main

main()
