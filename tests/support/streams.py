"""Random event streams for property tests (hypothesis), and the engine settings they need."""

from __future__ import annotations

from datetime import date

from hypothesis import strategies as st

from processors.engine import EngineConfig
from schemas.records import CHANNELS, EVENT_TYPES, InteractionEvent
from tests.support.engine import T0, D, H

TYPES = (*EVENT_TYPES, "brand_new_type")

#: A dedupe horizon longer than any stream of `streams`: a repeat older than the horizon is
#: processed again (and raises the same action_id, which sinks drop); within the horizon the
#: engine itself never repeats one, which is what "no action twice" checks.
REPEATS_WITHIN_HORIZON = EngineConfig(dedupe_horizon_ms=1000 * D)


@st.composite
def streams(draw: st.DrawFn, max_size: int = 60) -> list[InteractionEvent]:
    """Mostly increasing event times with some late events and some repeated event ids."""
    size = draw(st.integers(min_value=0, max_value=max_size))
    events: list[InteractionEvent] = []
    clock = T0
    for i in range(size):
        clock += draw(st.integers(min_value=0, max_value=30 * H))
        late = draw(st.sampled_from([0, 0, 0, 0, 10 * 60_000, 3 * D]))
        repeat = events and draw(st.integers(min_value=0, max_value=9)) == 0
        if repeat:
            events.append(draw(st.sampled_from(events)))
            continue
        type_ = draw(st.sampled_from(TYPES))
        events.append(
            InteractionEvent(
                event_id=f"e{i}",
                customer_id=draw(st.sampled_from(["ann", "bob", "cy"])),
                channel=draw(st.sampled_from(CHANNELS)),
                type=type_,
                occurred_at=clock - late,
                source="prop",
                product=draw(st.sampled_from([None, "gas", "power"])),
                reference=draw(st.sampled_from([None, "R1", "R2"])),
                customer_since=draw(st.sampled_from([None, date(2015, 5, 5), date(2024, 1, 1)])),
                attributes={"new_address": "1 Main St"} if type_ == "address_changed" else {},
            )
        )
    return events
