"""What `moments up` prints and writes: lines to copy survive a narrow terminal."""

from __future__ import annotations

import io
import stat
import subprocess
from pathlib import Path

from rich.console import Console

from common.settings import Settings
from moments.endpoints import export_lines, print_endpoints, write_env_file
from moments.runtime import with_session_keys

# What pgserver hands out: long, with a query string a shell must not expand.
DATABASE_URL = (
    "postgresql://postgres:@/postgres?host=/tmp/moments-pg-96szsl0s/pgdata-with-a-long-name"
)


def narrow_output(tmp_path: Path, width: int = 40) -> tuple[str, list[str]]:
    settings = Settings(bootstrap="127.0.0.1:39177", database_url=DATABASE_URL)
    exports = export_lines(settings)
    env_file = write_env_file(tmp_path, exports)
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    rows = [("Kafka bootstrap", "127.0.0.1:39177"), ("PostgreSQL", DATABASE_URL)]
    print_endpoints(console, "moments is up", rows, exports, env_file)
    return out.getvalue(), exports


def test_exports_and_urls_stay_whole_lines_at_a_narrow_width(tmp_path: Path) -> None:
    text, exports = narrow_output(tmp_path)
    lines = text.splitlines()
    assert exports == [
        "export MOMENTS_BOOTSTRAP=127.0.0.1:39177",
        f"export MOMENTS_DATABASE_URL='{DATABASE_URL}'",
    ]
    for line in exports:
        assert line in lines  # one line each, neither wrapped nor cut
    assert ["PostgreSQL", DATABASE_URL] in [line.split() for line in lines]
    assert "…" not in text
    assert f"source {tmp_path / 'env'}" in text


def test_env_file_sources_into_the_same_values_and_is_private(tmp_path: Path) -> None:
    narrow_output(tmp_path)
    path = tmp_path / "env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shown = subprocess.run(
        [
            "bash",
            "-c",
            'source "$1" && printf "%s\\n%s\\n" "$MOMENTS_BOOTSTRAP" "$MOMENTS_DATABASE_URL"',
            "-",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.splitlines() == ["127.0.0.1:39177", DATABASE_URL]


def test_moments_up_gives_each_role_a_key_of_its_own() -> None:
    settings = with_session_keys(Settings(bootstrap="127.0.0.1:1"))
    api = settings.api
    keys = [k.get_secret_value() for k in (*api.api_keys, *api.read_api_keys, *api.desk_keys)]
    assert len(keys) == 3 and len(set(keys)) == 3  # collector, read API, desk: all different
    assert api.id_hash_key is not None and api.id_hash_key.get_secret_value() not in keys
    env = settings.as_env()  # what every child process gets
    assert {"MOMENTS_API_KEYS", "MOMENTS_READ_API_KEYS", "MOMENTS_DESK_KEYS"} <= env.keys()
    hash_key = api.id_hash_key.get_secret_value()
    assert f"export MOMENTS_ID_HASH_KEY={hash_key}" in export_lines(settings)
    # Keys already set are kept.
    again = with_session_keys(settings)
    assert again.api == settings.api
