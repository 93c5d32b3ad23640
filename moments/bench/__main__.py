"""Manual runs: `python -m moments.bench [--full]` (quick unless --full)."""

import sys
from pathlib import Path

from common.settings import Settings
from moments.bench.report import markdown_table
from moments.bench.suite import run_bench


def _main() -> None:  # pragma: no cover - manual runs: python -m moments.bench [--full]
    report = run_bench(
        Settings(),
        quick="--full" not in sys.argv,
        json_path=Path("bench.json"),
        markdown_path=Path("bench.md"),
        chart_path=Path("bench.png"),
    )
    print(markdown_table(report))


if __name__ == "__main__":  # pragma: no cover
    _main()
