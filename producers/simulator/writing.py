"""Writing a simulation: `write_simulation` (JSON lines, the form `moments replay` reads,
optionally in two processes), `publish_simulation` (through the publisher SDK) and
`json_line`, the JSON form of an event, fast."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, Final, Protocol

from common.memory import no_cyclic_gc
from producers.simulator.habits import DAY, Plan, Rates
from producers.simulator.render import day_prefix, time_of_day
from producers.simulator.teams import STATUS_SOURCE, Teams, act
from producers.simulator.world import World, effective_rates, simulate, start_day_ms
from schemas.records import InteractionEvent


@dataclass
class SimulationSummary:
    """What a simulation produced and how fast."""

    events: int = 0
    seconds: float = 0.0
    by_channel: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class EventPublisher(Protocol):
    """What `publish_simulation` needs of `producers.publisher.Publisher`."""

    def publish(self, event: InteractionEvent) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


def write_simulation(
    path: Path,
    customers: int,
    days: int,
    seed: int,
    *,
    start: datetime | int | None = None,
    story_rate: float | None = None,
    rates: Rates | None = None,
    workers: int | None = None,
) -> SimulationSummary:
    """Write the simulation as InteractionEvent JSON lines (what `moments replay` reads).

    `workers` > 1 renders in that many forked processes (each plans the whole, cheap,
    deterministic population and renders its share of chunks); the file is byte for byte
    the same as with one. None: two workers for large runs when a second core is idle.
    """
    chosen = effective_rates(rates, story_rate)
    start_ms = start_day_ms(start)
    if workers is None:
        workers = _default_workers(customers * days)
    began = time.perf_counter()
    if workers <= 1:
        counts = _write_share(Path(path), customers, days, seed, start_ms, chosen, 0, 1)
    else:
        counts = _write_parallel(Path(path), customers, days, seed, start_ms, chosen, workers)
    teams = chosen.teams
    if teams is not None and teams.watch is not None:
        counts += _add_statuses(Path(path), teams, seed, start_ms + days * DAY)
    summary = SimulationSummary(seconds=time.perf_counter() - began)
    for (channel, event_type), count in counts.items():
        summary.events += count
        summary.by_channel[channel] += count
        summary.by_type[event_type] += count
    return summary


_channel_and_type = attrgetter("channel", "type")


def _add_statuses(path: Path, teams: Teams, seed: int, end_ms: int) -> Counter[tuple[str, str]]:
    """Merge the teams' status events into the written file (docs/design.md 12): the events
    are read back and fed to the engine in file order, as `moments replay` will; returns
    the counts of the status events added."""
    from schemas.codec import read_events_jsonl

    added: Counter[tuple[str, str]] = Counter()
    assert teams.watch is not None
    temp = path.with_name(f".{path.name}.teams")
    with no_cyclic_gc(), temp.open("w", encoding="utf-8", newline="\n") as out:
        for event in act(read_events_jsonl(path), teams, seed, teams.watch(), end_ms):
            if event.source == STATUS_SOURCE:
                added[(event.channel, event.type)] += 1
            out.write(json_line(event))
            out.write("\n")
    temp.replace(path)
    return added


def _default_workers(customer_days: int) -> int:
    """Two processes for a large run when a second core is idle (each plans the population
    again, so a busy second core makes it slower, not faster); else one."""
    cores = os.cpu_count() or 1
    if customer_days < 500_000 or cores < 2:
        return 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        return 1
    return 2 if busy < cores - 1.2 else 1


# Rendering work is split into chunks of this many moments (parallel writes).
_CHUNK: Final = 32_768


def _write_share(
    out_path: Path,
    customers: int,
    days: int,
    seed: int,
    start_ms: int,
    rates: Rates,
    share: int,
    shares: int,
) -> Counter[tuple[str, str]]:
    """Render chunks `share`, `share + shares`, ... into `out_path` (one file) or, when
    `shares` > 1, into `out_path/<chunk>.jsonl`; return counts by (channel, type)."""
    world = World(customers, days, seed, start_ms, rates)
    with no_cyclic_gc():
        return _render_share(world, out_path, share, shares)


def _render_share(
    world: World, out_path: Path, share: int, shares: int
) -> Counter[tuple[str, str]]:
    dispatch = world.renderer.dispatch
    counts: Counter[tuple[str, str]] = Counter()
    base = 0
    chunk_no = 0
    single = shares == 1
    out = out_path.open("w", encoding="utf-8", newline="\n") if single else None
    try:
        for due in world.windows():
            for low in range(0, len(due), _CHUNK):
                if chunk_no % shares == share:
                    events = _render_chunk(dispatch, due[low : low + _CHUNK], base + low + 1)
                    counts.update(map(_channel_and_type, events))
                    lines = [json_line(event) for event in events]
                    lines.append("")
                    text = "\n".join(lines)
                    if out is not None:
                        out.write(text)
                    else:
                        (out_path / f"{chunk_no:08d}.jsonl").write_text(text, encoding="utf-8")
                chunk_no += 1
            base += len(due)
    finally:
        if out is not None:
            out.close()
    return counts


def _render_chunk(
    dispatch: tuple[Callable[[Plan, int], InteractionEvent], ...],
    moments: list[Plan],
    first_number: int,
) -> list[InteractionEvent]:
    """Render a chunk channel by channel (each adapter's code and data stay hot in the CPU
    caches: about 10% faster than in time order), then put the events back in time order."""
    events: list[Any] = [None] * len(moments)
    by_kind: list[list[int]] = [[] for _ in dispatch]
    for position, moment in enumerate(moments):
        by_kind[moment[1]].append(position)
    for render, positions in zip(dispatch, by_kind, strict=True):
        for position in positions:
            events[position] = render(moments[position], first_number + position)
    return events


def _write_parallel(
    path: Path,
    customers: int,
    days: int,
    seed: int,
    start_ms: int,
    rates: Rates,
    workers: int,
) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    with tempfile.TemporaryDirectory(prefix=".moments-sim-", dir=path.parent or None) as tmp:
        parts = Path(tmp)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(
                    _write_share, parts, customers, days, seed, start_ms, rates, share, workers
                )
                for share in range(workers)
            ]
            for future in futures:
                counts.update(future.result())
        with path.open("wb") as out:
            for part in sorted(parts.iterdir()):
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 20)
    return counts


def publish_simulation(
    publisher: EventPublisher,
    customers: int,
    days: int,
    seed: int,
    *,
    start: datetime | int | None = None,
    story_rate: float | None = None,
    rates: Rates | None = None,
) -> SimulationSummary:
    """Publish the simulation through the publisher SDK; returns after the broker acknowledged."""
    summary = SimulationSummary()
    began = time.perf_counter()
    events = simulate(customers, days, seed, start=start, story_rate=story_rate, rates=rates)
    with no_cyclic_gc():
        for event in events:
            publisher.publish(event)
            summary.events += 1
            summary.by_channel[event.channel] += 1
            summary.by_type[event.type] += 1
    publisher.flush()
    summary.seconds = time.perf_counter() - began
    return summary


# --- the JSON form, fast ------------------------------------------------------------------------

_encode_text: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _iso_ms(ms: int) -> str:
    """The codec's timestamp form, quoted: `"YYYY-MM-DDTHH:MM:SS.mmm+00:00"`."""
    day, rest = divmod(ms, DAY)
    seconds, millis = divmod(rest, 1000)
    fraction = '.000+00:00"' if millis == 0 else f'.{millis:03d}+00:00"'
    return '"' + day_prefix(day) + time_of_day(seconds) + fraction


def _opt_text(value: str | None) -> str:
    return "null" if value is None else _encode_text(value)


def json_line(event: InteractionEvent) -> str:
    """`schemas.codec.to_json_line(event)`, byte for byte, without the generic machinery.

    Every simulated event goes through this, so it is written for speed; a unit
    test checks it against the codec on every simulated event.
    """
    attributes = event.attributes
    if attributes:
        attrs = ",".join(
            f"{_encode_text(k)}:{_encode_text(attributes[k])}" for k in sorted(attributes)
        )
    else:
        attrs = ""
    amount = event.amount
    due = event.due_date
    since = event.customer_since
    return (
        f'{{"event_id":{_encode_text(event.event_id)},'
        f'"customer_id":{_encode_text(event.customer_id)},'
        f'"channel":"{event.channel}","type":{_encode_text(event.type)},'
        f'"occurred_at":{_iso_ms(event.occurred_at)},'
        f'"source":{_encode_text(event.source)},'
        f'"product":{_opt_text(event.product)},'
        f'"reference":{_opt_text(event.reference)},'
        f'"amount":{"null" if amount is None else float.__repr__(float(amount))},'
        f'"currency":{_opt_text(event.currency)},'
        f'"due_date":{"null" if due is None else chr(34) + due.isoformat() + chr(34)},'
        f'"customer_since":{"null" if since is None else chr(34) + since.isoformat() + chr(34)},'
        f'"text":{_opt_text(event.text)},'
        f'"attributes":{{{attrs}}}}}'
    )
