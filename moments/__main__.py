"""`python -m moments` runs the CLI (used to start worker and sink child processes)."""

from moments.cli import main

main()
