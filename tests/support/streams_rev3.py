"""Helpers for the revision-3 engine tests: the default pack's engine, what one rule did, and
random streams whose arrival may be permuted within the allowed lateness (hypothesis)."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from hypothesis import strategies as st

from processors.engine import DictStore, Engine, EngineConfig, EngineOutput, load_rule_pack
from processors.engine.rule_model import RulePack
from schemas.records import CHANNELS, EVENT_TYPES, ActionEvent, Decision, InteractionEvent
from tests.support.engine import T0, D, H, M, run_settled

#: The default pack, loaded once (a RulePack is immutable).
DEFAULT_PACK: RulePack = load_rule_pack()
#: The allowed lateness of the default config: events within it of one another may arrive in
#: any order.
LATENESS = EngineConfig().allowed_lateness_ms


def default_engine(**config: Any) -> Engine:
    """An engine over the default pack with `config` (EngineConfig fields)."""
    return Engine(DEFAULT_PACK, EngineConfig(**config))


def feed(engine: Engine, store: DictStore, events: list[InteractionEvent]) -> EngineOutput:
    """The outputs of processing `events` in this order."""
    out = EngineOutput()
    for event in events:
        out.extend(engine.process(store, event))
    return out


def feed_settled(engine: Engine, store: DictStore, events: list[InteractionEvent]) -> EngineOutput:
    """`feed`, then the watermark moved to the newest of `events` (`run_settled`): what the
    engagement rules (and the service rules deciding at the watermark) make of each event."""
    return run_settled(engine, store, *events)


def actions_of(out: EngineOutput, rule_id: str) -> list[ActionEvent]:
    """The actions of one rule, in output order."""
    return [a for a in out.actions if a.rule == rule_id]


def decisions_of(out: EngineOutput, rule_id: str) -> list[Decision]:
    """The decisions of one rule, in output order."""
    return [d for d in out.decisions if d.rule == rule_id]


def reasons_of(out: EngineOutput, rule_id: str) -> list[str]:
    """The reasons of one rule's decisions, in output order (`fired` for a fired one)."""
    return [d.reason for d in out.decisions if d.rule == rule_id]


# -- streams whose arrival may be permuted ------------------------------------------------

#: The customers of a random stream; each keeps one customer_since in every event, so the
#: tenure the profile rule reads never depends on which of its events arrived first. ann and
#: dee are customers of five years and more (recognize_tenure applies), bob and cy are not.
SINCE: dict[str, date | None] = {
    "ann": date(2015, 5, 5),
    "bob": None,
    "cy": date(2024, 1, 1),
    "dee": date(2012, 2, 2),
}
CUSTOMERS = tuple(SINCE)
NOT_TENURED = ("bob", "cy")
PRODUCTS = (None, "gas", "power")
#: Every event type the default pack reads: the ones its rules listen to and the ones that
#: change the profile (openings, closings, preferences), and an operational one.
TYPES = tuple(t for t in EVENT_TYPES if t not in ("action_acknowledged", "action_reassigned"))
CASE_OPENINGS = {"dispute": "dispute_opened", "complaint": "complaint_filed"}
CASE_CLOSINGS = {"dispute": "dispute_resolved", "complaint": "complaint_resolved"}
#: Slots of the grid the safe streams' clusters sit on, in minutes: a cluster takes the first
#: five minutes of its slot. 110 minutes keep every deadline the default pack and config set
#: from an event (1 h gathers, 24 h caps and due_by, up to six caps in a row, 48 h cases,
#: 7 d owners, cool-downs and defer_for) in the part of a slot no cluster uses, at least one
#: allowed lateness before the next cluster: no event ever lies in (deadline, deadline +
#: lateness], where whether the timer fires before the event is applied depends on arrival.
SLOT_MINUTES = 110
SLOTS = 20 * 24 * 60 // SLOT_MINUTES  # twenty days


class Clusters(list[list[InteractionEvent]]):
    """A stream as clusters in time order; a cluster's events lie within the allowed lateness
    of one another (their arrival may be permuted), the clusters do not overlap in time."""


class _Builder:
    """Events with unique ids, each customer's own case references, for one drawn stream."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.count = 0
        self.references: dict[str, list[str]] = {c: [] for c in CUSTOMERS}

    def event(
        self, customer: str, type_: str, at: int, channel: str | None = None, **fields: Any
    ) -> InteractionEvent:
        self.count += 1
        return InteractionEvent(
            event_id=f"e{self.count:04d}",
            customer_id=customer,
            channel=channel or self.draw(st.sampled_from(CHANNELS)),
            type=type_,
            occurred_at=at,
            source="prop",
            customer_since=SINCE[customer],
            **fields,
        )

    def fresh_reference(self, customer: str) -> str:
        references = self.references[customer]
        references.append(f"{customer.upper()}-{len(references) + 1}")
        return references[-1]

    def offset(self) -> int:
        """A time within a cluster: less than the allowed lateness from its start."""
        return self.draw(st.integers(min_value=0, max_value=LATENESS - 1))

    def any_event(self, customer: str, at: int) -> InteractionEvent:
        """One event of any type the pack reads, with the fields and attributes it may carry."""
        draw = self.draw
        type_ = draw(st.sampled_from(TYPES))
        attributes: dict[str, str] = {}
        fields: dict[str, Any] = {"product": draw(st.sampled_from(PRODUCTS))}
        if type_ == "address_changed":
            attributes["new_address"] = draw(st.sampled_from(["1 Low St", "2 High St"]))
        elif type_ == "contact_preferences_changed":
            engagement = draw(st.sampled_from([None, "opt_out", "opt_in"]))
            preferred = draw(st.sampled_from([None, "call", "email", "web"]))
            attributes.update(
                {"engagement": engagement} if engagement else {},
                **({"preferred_channel": preferred} if preferred else {}),
            )
        elif type_ == "invoice_issued" and draw(st.booleans()):
            attributes["first_invoice"] = "true"
        elif type_ in ("meter_reading_submitted", "payment_received", "feedback_given"):
            by = draw(st.sampled_from([None, None, "customer", "meter", "agent"]))
            if by:
                attributes["submitted_by"] = by
        if type_ in CASE_OPENINGS.values() or type_ in CASE_CLOSINGS.values():
            known = self.references[customer]
            choice = draw(
                st.sampled_from(["none", "fresh", "known"] if known else ["none", "fresh"])
            )
            if choice == "fresh":
                fields["reference"] = self.fresh_reference(customer)
            elif choice == "known":
                fields["reference"] = draw(st.sampled_from(known))
        elif type_ in ("payment_demand_issued", "invoice_issued"):
            fields["reference"] = f"DOC-{self.count}"
            fields["amount"] = 120.0
            fields["currency"] = "EUR"
        elif type_ == "feedback_given":
            fields["text"] = "more tariffs"
        return self.event(customer, type_, at, attributes=attributes, **fields)


@st.composite
def any_clusters(draw: st.DrawFn, max_clusters: int = 16) -> Clusters:
    """Clusters of any events of any customers: the general stream of docs/design.md 11.1
    (address changes of one customer never share a cluster: `latest_only` is order-dependent
    for them by design)."""
    build = _Builder(draw)
    clusters = Clusters()
    base = T0
    for _ in range(draw(st.integers(min_value=1, max_value=max_clusters))):
        base += LATENESS + draw(st.sampled_from([0, M, 30 * M, 2 * H, 20 * H, 2 * D]))
        cluster: list[InteractionEvent] = []
        moved: set[str] = set()
        for _ in range(draw(st.integers(min_value=1, max_value=8))):
            customer = draw(st.sampled_from(CUSTOMERS))
            event = build.any_event(customer, base + build.offset())
            if event.type == "address_changed":
                if customer in moved:
                    continue
                moved.add(customer)
            cluster.append(event)
        clusters.append(cluster)
        base += LATENESS
    return clusters


def _scene(build: _Builder, customer: str, base: int) -> list[InteractionEvent]:
    """One customer's events in one cluster of a safe stream (see `safe_clusters`)."""
    draw = build.draw
    kinds = ["single", "single", "case"]
    if customer in NOT_TENURED:
        kinds += ["sequence", "contacts"]
    kind = draw(st.sampled_from(kinds))
    if kind == "single":
        return [build.any_event(customer, base + build.offset())]
    if kind == "case":
        case = draw(st.sampled_from(sorted(CASE_OPENINGS)))
        reference = build.fresh_reference(customer)
        product = draw(st.sampled_from(PRODUCTS))
        opened = base + draw(st.integers(min_value=0, max_value=LATENESS - 2))
        events = [build.event(customer, CASE_OPENINGS[case], opened, reference=reference,
                              product=product)]  # fmt: skip
        if draw(st.booleans()):
            closed = draw(st.integers(min_value=opened + 1, max_value=base + LATENESS - 1))
            events.append(build.event(customer, CASE_CLOSINGS[case], closed, reference=reference))
        return events
    if kind == "sequence":
        events = []
        for _ in range(draw(st.integers(min_value=2, max_value=4))):
            if draw(st.booleans()):
                events.append(build.event(customer, "payment_demand_issued",
                                          base + build.offset(), channel="billing",
                                          reference=f"PD-{build.count}", amount=80.0))  # fmt: skip
            else:
                events.append(build.event(customer, "meter_reading_submitted",
                                          base + build.offset(), product="gas",
                                          attributes={"submitted_by": "meter"}))  # fmt: skip
        if draw(st.booleans()):  # one reading the customer made: thanked, a positive moment
            events.append(build.event(customer, "meter_reading_submitted", base + build.offset(),
                                      channel="web", product="gas"))  # fmt: skip
        return events
    # contacts at distinct times (at one millisecond: the scenario contacts-at-one-time)
    times = draw(
        st.lists(st.integers(min_value=0, max_value=LATENESS - 1), min_size=3, max_size=5,
                 unique=True)
    )  # fmt: skip
    events = [build.event(customer, "inquiry", base + offset) for offset in times[1:]]
    if draw(st.booleans()):
        events.append(build.event(customer, "cancellation_requested", base + times[0],
                                  product=draw(st.sampled_from(PRODUCTS))))  # fmt: skip
    return events


@st.composite
def safe_clusters(draw: st.DrawFn, max_clusters: int = 24) -> Clusters:
    """Clusters on the slot grid (`SLOT_MINUTES`) whose arrival order the engine does not
    depend on today. Within one cluster a customer has one *scene*: a single event of any
    type; or a case with a fresh reference, opened and maybe resolved (the resolution later
    than the opening); or, for a customer without tenure, readings a meter uploaded and
    payment demands (review_payment_demand pairs both ways) with at most one reading the
    customer made, or inquiries with at most one cancellation (count windows completed late).

    Left out: what the engine still bookkeeps as events arrive, a reopening beside its
    resolution and a product event beside the product's closing (the xfail scenarios of
    test_engine_order_properties.py); and what the rules deciding at the watermark made
    order-independent, which that file's scenarios check one by one: two engagement
    candidates (cap, cool-down), an engagement candidate beside a case event or a preference
    change, two own moments of the ledger before a negative one (so at most one
    cancellation), a product event beside an address change or a first bill, two contacts
    beside a case opening (the owner's start), contacts at the same millisecond."""
    build = _Builder(draw)
    clusters = Clusters()
    slots = sorted(
        draw(st.sets(st.integers(min_value=0, max_value=SLOTS - 1), min_size=1,
                     max_size=max_clusters))
    )  # fmt: skip
    for slot in slots:
        base = T0 + slot * SLOT_MINUTES * M
        customers = draw(st.sets(st.sampled_from(CUSTOMERS), min_size=1, max_size=4))
        cluster = [e for c in sorted(customers) for e in _scene(build, c, base)]
        clusters.append(cluster)
    return clusters


def in_time_order(clusters: list[list[InteractionEvent]]) -> list[InteractionEvent]:
    """The events of `clusters` sorted by occurred_at (ties by event id)."""
    return sorted(
        (e for cluster in clusters for e in cluster), key=lambda e: (e.occurred_at, e.event_id)
    )


@st.composite
def arrivals(draw: st.DrawFn, clusters: list[list[InteractionEvent]]) -> list[InteractionEvent]:
    """The events of `clusters` in cluster order, each cluster's own order permuted."""
    return [e for cluster in clusters for e in draw(st.permutations(cluster))]


@st.composite
def permuted(
    draw: st.DrawFn, clusters: st.SearchStrategy[Clusters]
) -> tuple[Clusters, list[InteractionEvent]]:
    """A drawn stream and its arrival (`arrivals`): one value, so a test may also name
    explicit examples of both."""
    drawn = draw(clusters)
    return drawn, draw(arrivals(drawn))


def decided(
    events: list[InteractionEvent], out: EngineOutput
) -> tuple[Counter[tuple[str, str, str, str]], Counter[tuple[str, str, str]]]:
    """(decisions, fired actions) as multisets of (customer, rule, what it is about[, outcome]).

    What a decision is about does not depend on which of several equivalent events fired:
    the key of `first` and case rules (the product of a first bill, the case id: reference,
    else the opening's id), the completing event of a sequence (the demand) and the event of a
    match rule without cool-down (feedback, an address change); "" for the rules that fire
    per customer under a cool-down (gathered check-ins, thanks, tenure, escalations, repair),
    where the one that fires is the first to arrive (see docs/design.md 11.1)."""
    by_id = {e.event_id: e for e in events}

    def about(rule_id: str, evidence: list[str]) -> str:
        if rule_id == "explain_first_bill":
            return by_id[evidence[0]].product or ""
        if rule_id in ("case_follow_up", "case_unresolved"):
            event = by_id[evidence[0]]
            return event.reference or event.event_id
        if rule_id in ("review_payment_demand", "route_feedback", "propagate_address"):
            return evidence[-1]
        return ""

    decisions = Counter(
        (d.customer_id, d.rule, about(d.rule, d.evidence), d.outcome) for d in out.decisions
    )
    actions = Counter((a.customer_id, a.rule, about(a.rule, a.evidence)) for a in out.actions)
    return decisions, actions


def run_stream(
    engine: Engine, events: list[InteractionEvent], until: int | None = None
) -> EngineOutput:
    """The outputs of `events` in this order on a fresh store, then the watermark at `until`."""
    store = DictStore()
    out = feed(engine, store, events)
    if until is not None:
        out.extend(engine.advance_watermark(store, until))
    return out
