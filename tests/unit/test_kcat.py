"""`moments kcat`: the command line and environment it builds (no broker, no kcat run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moments.endpoints import write_env_file
from moments.kcat import (
    NO_BROKER,
    NO_KCAT,
    KcatError,
    bootstrap_from_env_file,
    has_broker_option,
    kcat_command,
    kcat_environment,
    library_dir,
)


@pytest.fixture
def fake_kcat(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH holds only an executable named kcat."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kcat = bin_dir / "kcat"
    kcat.write_text("#!/bin/sh\n")
    kcat.chmod(0o755)
    return {"PATH": str(bin_dir), "LD_LIBRARY_PATH": "/opt/other"}


def test_b_is_filled_from_the_settings_and_the_bundled_librdkafka_comes_first(
    tmp_path: Path, fake_kcat: dict[str, str]
) -> None:
    argv, env = kcat_command(
        ["-C", "-t", "actions.care"],
        bootstrap="127.0.0.1:9092",
        data_dir=tmp_path / "data",
        base_env=fake_kcat,
    )
    assert argv == [f"{fake_kcat['PATH']}/kcat", "-b", "127.0.0.1:9092", "-C", "-t", "actions.care"]
    first, rest = env["LD_LIBRARY_PATH"].split(":", 1)
    assert rest == "/opt/other"
    link = Path(first) / "librdkafka.so.1"
    assert link.is_symlink() and "confluent_kafka.libs" in os.readlink(link)


def test_b_comes_from_a_running_moments_up_when_no_setting_names_it(
    tmp_path: Path, fake_kcat: dict[str, str]
) -> None:
    write_env_file(tmp_path, ["export MOMENTS_BOOTSTRAP=127.0.0.1:40001"])
    assert bootstrap_from_env_file(tmp_path) == "127.0.0.1:40001"
    argv, _ = kcat_command(["-L"], bootstrap=None, data_dir=tmp_path, base_env=fake_kcat)
    assert argv[1:] == ["-b", "127.0.0.1:40001", "-L"]


@pytest.mark.parametrize(
    "args",
    [["-b", "h:1", "-L"], ["-bh:1", "-L"], ["-X", "bootstrap.servers=h:1", "-L"]],
)
def test_a_broker_given_in_the_arguments_is_kept(
    args: list[str], tmp_path: Path, fake_kcat: dict[str, str]
) -> None:
    assert has_broker_option(args)
    argv, _ = kcat_command(args, bootstrap="other:2", data_dir=tmp_path, base_env=fake_kcat)
    assert argv[1:] == args


def test_system_librdkafka_leaves_the_environment_alone(
    tmp_path: Path, fake_kcat: dict[str, str]
) -> None:
    _, env = kcat_command(
        ["-L"], bootstrap="h:1", data_dir=tmp_path, base_env=fake_kcat, system_librdkafka=True
    )
    assert env == fake_kcat
    assert kcat_environment({}, tmp_path) == {"LD_LIBRARY_PATH": str(tmp_path)}


def test_a_stale_link_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "old.so").touch()
    (tmp_path / "new.so").touch()
    library_dir(tmp_path / "libs", tmp_path / "old.so")
    library_dir(tmp_path / "libs", tmp_path / "new.so")
    assert os.readlink(tmp_path / "libs" / "librdkafka.so.1") == str(tmp_path / "new.so")


def test_missing_kcat_or_broker_says_what_to_do(tmp_path: Path, fake_kcat: dict[str, str]) -> None:
    with pytest.raises(KcatError, match="apt-get install kcat") as missing:
        kcat_command(["-L"], bootstrap="h:1", data_dir=tmp_path, base_env={"PATH": str(tmp_path)})
    assert str(missing.value) == NO_KCAT
    with pytest.raises(KcatError) as no_broker:
        kcat_command(["-L"], bootstrap=None, data_dir=tmp_path, base_env=fake_kcat)
    assert str(no_broker.value) == NO_BROKER
