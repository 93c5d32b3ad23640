"""`moments kcat ARGS...`: the kcat on PATH, made to work against the embedded broker.

Debian bookworm's kcat links librdkafka 2.0.2, which misreads the tagged
fields of Tansu's ApiVersions v3 answer ("Read underflow") and never
connects; against Apache Kafka it works as is. The confluent-kafka wheel
bundles a newer librdkafka with the same ABI (soname `librdkafka.so.1`), so
kcat runs on that one: a directory holding a `librdkafka.so.1` link to it is
put first on `LD_LIBRARY_PATH`. `-b` is filled in from `MOMENTS_BOOTSTRAP`,
else from the env file of a running `moments up`, unless ARGS carry one.

This module only builds a command line and an environment; it never talks to
Kafka itself.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from moments.endpoints import ENV_FILE_NAME

NO_KCAT = "kcat is not on PATH (Debian/Ubuntu: apt-get install kcat; macOS: brew install kcat)"
NO_BROKER = (
    "no broker to point kcat at: set MOMENTS_BOOTSTRAP, run `moments up` in another shell, "
    "or pass -b HOST:PORT"
)


class KcatError(RuntimeError):
    """kcat cannot be run (not installed, no broker known); the message says what to do."""


def bundled_librdkafka() -> Path | None:
    """The librdkafka shared library inside the installed confluent-kafka wheel, if any."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    return found[0] if found else None


def library_dir(directory: Path, library: Path) -> Path:
    """DIRECTORY holding `librdkafka.so.1` -> LIBRARY (made or refreshed); DIRECTORY."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "librdkafka.so.1"
    if link.is_symlink() and Path(os.readlink(link)) == library:
        return directory
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(library)
    return directory


def kcat_environment(base: Mapping[str, str], libdir: Path | None) -> dict[str, str]:
    """BASE with LIBDIR first on LD_LIBRARY_PATH (BASE unchanged when LIBDIR is None)."""
    env = dict(base)
    if libdir is not None:
        rest = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = f"{libdir}:{rest}" if rest else str(libdir)
    return env


def has_broker_option(args: Sequence[str]) -> bool:
    """Whether ARGS name a broker already (`-b X`, `-bX`, `-X bootstrap.servers=...`)."""
    for index, arg in enumerate(args):
        if arg.startswith("-b"):
            return True
        following = args[index + 1] if index + 1 < len(args) else ""
        if arg == "-X" and following.startswith(("bootstrap.servers=", "metadata.broker.list=")):
            return True
    return False


def bootstrap_from_env_file(data_dir: Path) -> str | None:
    """MOMENTS_BOOTSTRAP as written by a running `moments up` to DATA_DIR/env, if there."""
    path = data_dir / ENV_FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and words[1].startswith("MOMENTS_BOOTSTRAP="):
            return words[1].split("=", 1)[1] or None
    return None


def kcat_command(
    args: Sequence[str],
    *,
    bootstrap: str | None,
    data_dir: Path,
    base_env: Mapping[str, str],
    system_librdkafka: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run kcat with ARGS against BOOTSTRAP.

    BOOTSTRAP falls back to the env file of `moments up` in DATA_DIR. Raises
    `KcatError` when kcat is missing or no broker is known.
    """
    kcat = shutil.which("kcat", path=base_env.get("PATH"))
    if kcat is None:
        raise KcatError(NO_KCAT)
    argv = [kcat]
    if not has_broker_option(args):
        broker = bootstrap or bootstrap_from_env_file(data_dir)
        if not broker:
            raise KcatError(NO_BROKER)
        argv += ["-b", broker]
    argv += list(args)
    library = None if system_librdkafka else bundled_librdkafka()
    libdir = library_dir(data_dir / "librdkafka", library) if library is not None else None
    return argv, kcat_environment(base_env, libdir)
