"""The teams behind the destinations: who acknowledges and completes the actions the engine
raises, how fast, and which they leave undone (docs/design.md 12, "simulated teams").

Each destination has a `Team` (the share it acknowledges, the share of those it completes,
the median delays); `Teams.fate` decides one action's fate from a hash of the seed, the
customer, the rule and the time of the event that triggered it, so the planner (which
applies an engagement rule's effect only when its action is done, resolution `completed`)
and `act` (which emits the status events) agree without sharing any state, and the output
stays deterministic for a seed.

`act` runs over the simulated events in arrival order: it feeds each event to a `Watch`
(the engine itself, handed in by the CLI: producers never import the engine) and, for each
action the watch reports, schedules `action_acknowledged`, sometimes `action_reassigned`,
and `action_done` events (channel `other`, `reference` = the action_id) at the fate's
times, merged into the stream by time and fed to the watch in turn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from heapq import heappop, heappush
from statistics import NormalDist
from typing import Final

from schemas.records import InteractionEvent

HOUR_MS: Final = 3_600_000

#: (action_id, customer_id, rule, destination, triggered_at ms, evidence event ids): an
#: action the engine raised.
RaisedAction = tuple[str, str, str, str, int, list[str]]
#: Feeds one event to the engine; returns the actions it raised.
Watch = Callable[[InteractionEvent], Iterable[RaisedAction]]

#: Rules whose fate is keyed by the customer alone: the planner cannot know when the engine
#: raises them (a profile rule fires on whatever event comes next), only whether the team
#: ever acts for that customer.
PER_CUSTOMER: Final = frozenset({"recognize_tenure"})
#: Event types whose times key the fate of the actions they trigger (the effect rules'
#: triggers): the planner knows these times when it plans the response.
KEYED_TYPES: Final = frozenset({"invoice_issued", "meter_reading_submitted"})

#: The `source` of the status events the teams send.
STATUS_SOURCE: Final = "simulator-teams"
RESOLUTIONS: Final = ("completed", "customer_declined", "unreachable", "not_appropriate")
_NORMAL: Final = NormalDist()


@dataclass(frozen=True, slots=True)
class Team:
    """One destination's habits: shares in [0, 1], median delays in hours (log-normal)."""

    acknowledges: float
    hours_to_acknowledge: float
    completes: float  # of the acknowledged
    hours_to_done: float  # after the acknowledgement
    reassigns: float = 0.1  # of the acknowledged, before done
    #: Shares of the done that end `customer_declined`, `unreachable`, `not_appropriate`.
    declined: float = 0.05
    unreachable: float = 0.06
    inappropriate: float = 0.02

    def __post_init__(self) -> None:
        for name in ("acknowledges", "completes", "reassigns"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"team {name} must be between 0 and 1, got {getattr(self, name)}")
        if self.hours_to_acknowledge <= 0 or self.hours_to_done <= 0:
            raise ValueError("team delays must be positive hours")


#: Care acknowledges within hours and completes most; billing is slower; recognition often
#: never gets round to it.
DEFAULT_TEAMS: Final[Mapping[str, Team]] = {
    "care": Team(0.97, 2.0, 0.9, 16.0),
    "billing": Team(0.85, 10.0, 0.75, 36.0),
    "recognition": Team(0.5, 30.0, 0.45, 72.0),
    "feedback": Team(0.8, 24.0, 0.7, 72.0),
    "crm": Team(0.95, 1.0, 0.95, 6.0),
}
#: A destination without its own team.
OTHER_TEAM: Final = Team(0.8, 12.0, 0.7, 48.0)
#: No action is done later than this after it was raised (well inside the lapse horizon).
MAX_DELAY_MS: Final = 25 * 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class Fate:
    """What one action's team does, as delays after the trigger (None: never)."""

    acknowledged_ms: int | None
    owner: str | None
    reassigned_ms: int | None
    new_owner: str | None
    done_ms: int | None
    resolution: str | None

    @property
    def completed(self) -> bool:
        return self.resolution == "completed"


def _draws(*parts: object) -> list[float]:
    """Eight independent uniforms in [0, 1) hashed from the parts."""
    digest = hashlib.sha512("\x1f".join(map(str, parts)).encode()).digest()
    return [int.from_bytes(digest[i : i + 8], "big") / 2**64 for i in range(0, 64, 8)]


def _delay(median_hours: float, u: float) -> int:
    """A log-normal delay (sigma 0.8) with that median, at least a minute."""
    z = _NORMAL.inv_cdf(min(max(u, 1e-9), 1 - 1e-9))
    hours = median_hours * 2.718281828459045 ** (0.8 * z)
    return max(60_000, min(int(hours * HOUR_MS), MAX_DELAY_MS // 2))


@dataclass(frozen=True)
class Teams:
    """The teams of the destinations, and how to watch the engine raise actions.

    `watch` builds a fresh `Watch` (one engine) per simulation; without it the planner
    still applies effects only to done actions, but no status event is emitted.
    """

    teams: Mapping[str, Team] = field(default_factory=lambda: dict(DEFAULT_TEAMS))
    watch: Callable[[], Watch] | None = None

    def team(self, destination: str) -> Team:
        return self.teams.get(destination, OTHER_TEAM)

    def fate(self, seed: int, customer_id: str, rule: str, destination: str, key_ms: int) -> Fate:
        """The fate of the action of `rule` for the customer triggered at `key_ms` (0 for the
        rules in `PER_CUSTOMER`): deterministic, the same for the planner and `act`."""
        if rule in PER_CUSTOMER:
            key_ms = 0
        team = self.team(destination)
        u = _draws(seed, customer_id, rule, key_ms)
        if u[0] >= team.acknowledges:
            return Fate(None, None, None, None, None, None)
        acknowledged = _delay(team.hours_to_acknowledge, u[1])
        agent = int(u[7] * 40)
        owner = f"{destination}-agent-{agent:02d}"
        done = acknowledged + _delay(team.hours_to_done, u[3]) if u[2] < team.completes else None
        reassigned = new_owner = None
        if u[4] < team.reassigns:
            end = done if done is not None else acknowledged + 2 * _delay(team.hours_to_done, u[3])
            reassigned = acknowledged + max(1, int((end - acknowledged) * 0.4))
            new_owner = f"{destination}-agent-{(agent + 1 + int(u[6] * 39)) % 40:02d}"
        resolution = None
        if done is not None:
            r = u[5]
            cuts = (team.declined, team.declined + team.unreachable)
            if r < cuts[0]:
                resolution = RESOLUTIONS[1]
            elif r < cuts[1]:
                resolution = RESOLUTIONS[2]
            elif r < cuts[1] + team.inappropriate:
                resolution = RESOLUTIONS[3]
            else:
                resolution = RESOLUTIONS[0]
        return Fate(acknowledged, owner, reassigned, new_owner, done, resolution)


def _status_event(
    action_id: str, customer_id: str, kind: str, at: int, attributes: dict[str, str]
) -> InteractionEvent:
    event_id = hashlib.sha256(f"{action_id}\x1f{kind}\x1f{at}".encode()).hexdigest()[:32]
    return InteractionEvent(
        event_id=event_id,
        customer_id=customer_id,
        channel="other",
        type=kind,
        occurred_at=at,
        source=STATUS_SOURCE,
        reference=action_id,
        attributes=attributes,
    )


def status_events(action: RaisedAction, fate: Fate, base_ms: int) -> list[InteractionEvent]:
    """The status events of one action's fate, times counted from `base_ms`."""
    action_id, customer_id = action[0], action[1]
    out: list[InteractionEvent] = []
    if fate.acknowledged_ms is None or fate.owner is None:
        return out
    out.append(
        _status_event(
            action_id,
            customer_id,
            "action_acknowledged",
            base_ms + fate.acknowledged_ms,
            {"owner": fate.owner},
        )
    )
    if fate.reassigned_ms is not None and fate.new_owner is not None:
        out.append(
            _status_event(
                action_id,
                customer_id,
                "action_reassigned",
                base_ms + fate.reassigned_ms,
                {"owner": fate.new_owner},
            )
        )
    if fate.done_ms is not None and fate.resolution is not None:
        out.append(
            _status_event(
                action_id,
                customer_id,
                "action_done",
                base_ms + fate.done_ms,
                {"resolution": fate.resolution},
            )
        )
    return out


def act(
    events: Iterable[InteractionEvent], teams: Teams, seed: int, watch: Watch, end_ms: int
) -> Iterator[InteractionEvent]:
    """`events` (arrival order) with the teams' status events merged in by time.

    A status event comes before the first event later than it (the running maximum of
    event time is the clock, so a late record does not hold statuses back); statuses due
    at or after `end_ms` are never sent, like every simulated record.
    """
    pending: list[tuple[int, int, InteractionEvent]] = []
    keyed: dict[str, int] = {}  # event_id -> occurred_at of the events in KEYED_TYPES
    number = 0

    def feed(event: InteractionEvent) -> None:
        nonlocal number
        for action in watch(event):
            _, customer_id, rule, destination, triggered_at, evidence = action
            times = [keyed[e] for e in evidence if e in keyed]
            key = max(times) if times else triggered_at
            fate = teams.fate(seed, customer_id, rule, destination, key)
            # Delays count from the trigger the planner knew, never before the action.
            base = max(key, triggered_at) if rule not in PER_CUSTOMER else triggered_at
            for status in status_events(action, fate, base):
                if status.occurred_at < end_ms:
                    number += 1
                    heappush(pending, (status.occurred_at, number, status))

    clock = -(2**63)
    for event in events:
        if event.type in KEYED_TYPES:
            keyed[event.event_id] = event.occurred_at
        if event.occurred_at > clock:
            clock = event.occurred_at
        while pending and pending[0][0] <= clock:
            status = heappop(pending)[2]
            feed(status)
            yield status
        feed(event)
        yield event
    while pending:
        status = heappop(pending)[2]
        feed(status)
        yield status
