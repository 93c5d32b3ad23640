"""`moments rules history --json` against the embedded broker: one object per publication."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from common.settings import Settings
from moments.cli import app

DEFAULT_PACK = Path(__file__).resolve().parents[2] / "processors" / "rules" / "default.yaml"


def test_rules_history_json_lists_each_publication(settings: Settings) -> None:
    env = settings.as_env()
    published = CliRunner().invoke(
        app, ["rules", "publish", str(DEFAULT_PACK), "--author", "ann"], env=env
    )
    assert published.exit_code == 0, published.output
    result = CliRunner().invoke(app, ["rules", "history", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    assert entry["pack"] == "default" and entry["author"] == "ann"
    assert isinstance(entry["offset"], int) and entry["published_at"]
    assert entry["rules"].startswith("11 rules")
