"""The engine's lateness and time zone settings: parsed from the environment, bounded, wired."""

from __future__ import annotations

import pytest

from common.settings import Settings, SettingsError
from processors.config import engine_config

DAY_S = 86_400.0


def test_max_lateness_and_timezone_default_to_seven_days_and_utc() -> None:
    engine = Settings().engine
    assert (engine.max_lateness, engine.max_lateness_ms, engine.timezone) == (
        7 * DAY_S,
        7 * 86_400_000,
        "UTC",
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("3d", 3 * DAY_S), ("36h", 1.5 * DAY_S), ("600", 600.0), ("90m", 5400.0)]
)
def test_max_lateness_reads_seconds_or_a_duration_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, text: str, seconds: float
) -> None:
    monkeypatch.setenv("MOMENTS_MAX_LATENESS", text)
    monkeypatch.setenv("MOMENTS_TIMEZONE", "Europe/Berlin")
    engine = Settings().engine
    assert (engine.max_lateness, engine.timezone) == (seconds, "Europe/Berlin")
    again = Settings(**dict(Settings().values()))  # what a child process gets back
    assert again.engine == engine


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"max_lateness": "1m"}, "at least the allowed lateness"),  # allowed: 300 s
        ({"max_lateness": "8d"}, "at most the dedupe horizon"),
        ({"dedupe_horizon_s": DAY_S}, "at most the dedupe horizon"),  # the default 7 d is more
        ({"allowed_lateness_s": 8 * DAY_S, "dedupe_horizon_s": 9 * DAY_S}, "at least"),
    ],
)
def test_max_lateness_outside_its_bounds_is_one_error_naming_it(
    fields: dict[str, object], says: str
) -> None:
    with pytest.raises(SettingsError) as info:
        Settings(**fields)
    message = str(info.value)
    assert message.startswith("invalid settings: MOMENTS_MAX_LATENESS: must be")
    assert says in message and "Value error" not in message


def test_max_lateness_at_its_bounds_is_valid() -> None:
    assert Settings(max_lateness=300).engine.max_lateness_ms == 300_000
    assert Settings(max_lateness="2d", dedupe_horizon_s=2 * DAY_S).engine.max_lateness == 2 * DAY_S


@pytest.mark.parametrize("name", ["Nowhere/City", "utc", "Europe", "../../etc/passwd", ""])
def test_a_timezone_not_in_the_iana_database_is_one_error_naming_it(name: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings(timezone=name)
    assert str(info.value) == (  # the same words for any value: none is echoed
        "invalid settings: MOMENTS_TIMEZONE: Value error, not a time zone of the IANA"
        " database; expected a name such as Europe/Berlin, America/New_York or UTC"
    )


def test_a_timezone_error_comes_with_the_others() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(timezone="Mars/Olympus", contact_cap=-1)
    assert "MOMENTS_CONTACT_CAP" in str(info.value) and "MOMENTS_TIMEZONE" in str(info.value)


def test_engine_config_carries_max_lateness_and_timezone() -> None:
    config = engine_config(Settings(max_lateness="3d", timezone=" America/New_York "))
    assert (config.max_lateness_ms, config.timezone) == (3 * 86_400_000, "America/New_York")
    default = engine_config(Settings())
    assert (default.max_lateness_ms, default.timezone) == (7 * 86_400_000, "UTC")
