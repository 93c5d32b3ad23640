"""What `moments up` tells the user: every endpoint, and the lines to copy into a shell.

Lines meant to be copied (the `export` lines, URLs) must survive any
terminal width: they are printed as plain text that rich never wraps, folds
or cuts (`soft_wrap=True`, no markup), and the exports are also written to
an env file (`.moments/env`) that a shell can `source`: every URL and key of
the stack, and the pid of `moments up`, by which the other commands started in
the same directory find a running stack without exports (`running_stack`). The
file is readable by its owner only (it holds keys; a database URL may hold a
password) and removed when the stack stops, so it never points at a stack that
is gone.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from common.settings import Settings

ENV_FILE_NAME = "env"


#: The variable of the env file naming the process of `moments up` that wrote it.
PID_VARIABLE = "MOMENTS_UP_PID"


def export_lines(settings: Settings, extra: Mapping[str, str] | None = None) -> list[str]:
    """`export MOMENTS_...=...` lines that point another shell at this stack (shell-quoted):
    the broker, the database, every role's keys (JSON lists, as the settings read them),
    the id hash key, then EXTRA (URLs and single keys for curl; `MOMENTS_UP_PID`)."""
    api = settings.api
    hash_key = api.id_hash_key

    def keys(values: Sequence[SecretStr]) -> str:
        return json.dumps([key.get_secret_value() for key in values]) if values else ""

    values = {
        "MOMENTS_BOOTSTRAP": settings.kafka.bootstrap or "",
        "MOMENTS_DATABASE_URL": settings.database.database_url or "",
        # The other commands name customers in their logs by the same keyed hash.
        "MOMENTS_ID_HASH_KEY": hash_key.get_secret_value() if hash_key else "",
        "MOMENTS_API_KEYS": keys(api.api_keys),
        "MOMENTS_READ_API_KEYS": keys(api.read_api_keys),
        "MOMENTS_DESK_KEYS": keys(api.desk_keys),
        **(extra or {}),
    }
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items() if value]


def write_env_file(directory: Path, lines: Sequence[str]) -> Path:
    """Write LINES to DIRECTORY/env (mode 0600) for `source`; the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ENV_FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("# moments up: the running stack (removed when it stops)\n")
        out.write("".join(f"{line}\n" for line in lines))
    os.chmod(path, 0o600)  # an older file may have had wider permissions
    return path


def read_env_file(directory: Path) -> dict[str, str]:
    """The `export NAME=VALUE` lines of DIRECTORY/env ({} when there is none)."""
    try:
        text = (directory / ENV_FILE_NAME).read_text(encoding="utf-8")
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            found[name] = value
    return found


def running_stack(directory: Path) -> dict[str, str]:
    """The variables of the `moments up` running from DIRECTORY ({} when none runs: no
    file, or the process that wrote it is gone, e.g. killed with -9)."""
    found = read_env_file(directory)
    try:
        pid = int(found.get(PID_VARIABLE, ""))
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return {}
    except PermissionError:  # alive, another user's
        pass
    return found


def plain_line(console: Console, text: str, *, style: str | None = None) -> None:
    """Print TEXT as it is: no markup, no highlighting, never wrapped, folded or cut by rich."""
    console.print(text, style=style, soft_wrap=True, highlight=False, markup=False, emoji=False)


def print_endpoints(
    console: Console,
    title: str,
    rows: Sequence[tuple[str, str]],
    exports: Sequence[str],
    env_file: Path | None,
) -> None:
    """The endpoints as aligned `part  where` lines, then the exports: nothing wraps or is cut.

    A long value runs past the terminal's edge rather than being folded or
    shortened by rich (the terminal's own soft wrap keeps it one line when copied).
    """
    plain_line(console, title, style="bold")
    width = max((len(part) for part, _ in rows), default=0)
    for part, where in rows:
        plain_line(console, f"  {part.ljust(width)}  {where}")
    if env_file is not None:
        plain_line(console, "to use the other commands against this stack, run:")
        plain_line(console, f"  source {shlex.quote(str(env_file))}")
        plain_line(console, "or paste:")
    else:
        plain_line(console, "export these to use the other commands against this stack:")
    for line in exports:
        plain_line(console, line)
