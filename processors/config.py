"""The engine's knobs from the one settings object (seconds there, milliseconds in the engine).

Shared by every host of the engine: the worker, backfill, replay from the CLI and the demo.
"""

from __future__ import annotations

from common.settings import Settings
from processors.engine import EngineConfig


def engine_config(settings: Settings) -> EngineConfig:
    """The engine's knobs from the settings."""
    return EngineConfig(
        allowed_lateness_ms=round(settings.engine.allowed_lateness_s * 1000),
        contact_cap=settings.engine.contact_cap,
        contact_cap_window_ms=round(settings.engine.contact_cap_window_s * 1000),
        holdout_percent=settings.engine.holdout_percent,
        dedupe_horizon_ms=round(settings.engine.dedupe_horizon_s * 1000),
        max_lateness_ms=settings.engine.max_lateness_ms,
        action_horizon_ms=settings.engine.action_horizon_ms,
        timezone=settings.engine.timezone,
        emit_from_ms=(
            None
            if settings.engine.emit_from is None
            else int(settings.engine.emit_from.timestamp() * 1000)
        ),
    )
