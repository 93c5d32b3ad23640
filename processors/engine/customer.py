"""The customer's profile in the state: the products held and the relationship ledger.

Functions of the customer's state dict (see `state.py` for its keys), used when an
event is applied and when an action fires. Pure.
"""

from __future__ import annotations

from bisect import insort
from typing import Any, Final

from processors.engine.state import (
    CLOSED,
    CONSENT,
    CONSENT_AT,
    CONSENT_ENGAGEMENT,
    CONSENT_PREFERRED,
    LEDGER,
    MOMENT_AT,
    NAMED,
    OPENED,
    OWN_CHANNEL,
    PRODUCTS,
)
from schemas.records import InteractionEvent

#: The channels a person uses themselves (channel_hint never names billing or other).
PERSON_CHANNELS: Final = frozenset({"call", "email", "web"})
#: The event that changes a customer's contact preferences, its attributes and their values.
PREFERENCES_CHANGED: Final = "contact_preferences_changed"
ENGAGEMENT_ATTRIBUTE: Final = "engagement"
PREFERRED_ATTRIBUTE: Final = "preferred_channel"
OPT_OUT: Final = "opt_out"
OPT_IN: Final = "opt_in"
#: The event that opens an account for a product (new_within).
PRODUCT_OPENED: Final = "account_opened"
#: How many openings per product are remembered, and how long.
OPENINGS_KEPT: Final = 4


def made_by_person(event: InteractionEvent) -> bool:
    """Did a person make the event? `attributes.submitted_by` says so when present
    (`customer`: yes; `meter` or anything else: no), else its channel (call, email, web)."""
    return person_made(event.channel, event.attributes.get("submitted_by"))


def person_made(channel: str, submitted_by: str | None) -> bool:
    """`made_by_person` from an event's channel and `attributes.submitted_by` (or None)."""
    if submitted_by is not None:
        return submitted_by == "customer"
    return channel in PERSON_CHANNELS


def is_own_moment(event: InteractionEvent) -> bool:
    """Whether an event of a ledger type is the customer's own moment: not one a machine
    reported on their behalf (`attributes.submitted_by` other than `customer`)."""
    by = event.attributes.get("submitted_by")
    return by is None or by == "customer"


def record_preferences(state: dict[str, Any], event: InteractionEvent) -> None:
    """A contact_preferences_changed event: its engagement choice and preferred channel
    take effect from its time (kept sorted, so a late one lands in its place)."""
    attributes = event.attributes
    engagement = attributes.get(ENGAGEMENT_ATTRIBUTE)
    preferred = attributes.get(PREFERRED_ATTRIBUTE)
    if engagement not in (OPT_OUT, OPT_IN):
        engagement = None
    if preferred not in PERSON_CHANNELS:
        preferred = None
    if engagement is None and preferred is None:
        return
    entry: list[Any] = [event.occurred_at, engagement, preferred]
    changes: list[list[Any]] | None = state.get(CONSENT)
    if changes is None:
        state[CONSENT] = [entry]
    else:
        insort(changes, entry, key=_consent_order)
        if len(changes) > 16:  # the newest say what holds now; a late one's era is recent
            del changes[: len(changes) - 16]


def _consent_order(entry: list[Any]) -> int:
    at: int = entry[CONSENT_AT]
    return at


def opted_out(state: dict[str, Any], at: int) -> bool:
    """Had the customer opted out of engagement contact at `at`?"""
    changes: list[list[Any]] | None = state.get(CONSENT)
    if not changes:
        return False
    choice = None
    for entry in changes:
        if entry[CONSENT_AT] > at:
            break
        if entry[CONSENT_ENGAGEMENT] is not None:
            choice = entry[CONSENT_ENGAGEMENT]
    return choice == OPT_OUT


def channel_hint(state: dict[str, Any], at: int) -> str | None:
    """The channel to reach the customer on at `at`: their preferred channel, else the last
    channel they used themselves (call, email, web), else None."""
    changes: list[list[Any]] | None = state.get(CONSENT)
    if changes:
        preferred = None
        for entry in changes:
            if entry[CONSENT_AT] > at:
                break
            if entry[CONSENT_PREFERRED] is not None:
                preferred = entry[CONSENT_PREFERRED]
        if preferred is not None:
            return str(preferred)
    own: list[Any] | None = state.get(OWN_CHANNEL)
    return None if own is None else str(own[1])


def record_own_channel(state: dict[str, Any], event: InteractionEvent) -> None:
    """The newest channel the customer used themselves."""
    if event.channel not in PERSON_CHANNELS or not made_by_person(event):
        return
    own: list[Any] | None = state.get(OWN_CHANNEL)
    if own is None or own[0] <= event.occurred_at:
        state[OWN_CHANNEL] = [event.occurred_at, event.channel]


def record_opening(state: dict[str, Any], product: str, t: int) -> None:
    """An account_opened for `product` at `t` (new_within)."""
    openings: dict[str, list[int]] | None = state.get(OPENED)
    if openings is None:
        state[OPENED] = {product: [t]}
        return
    times = openings.get(product)
    if times is None:
        openings[product] = [t]
    elif t not in times:
        insort(times, t)
        if len(times) > OPENINGS_KEPT:
            del times[0]


def opened_within(state: dict[str, Any], product: str | None, t: int, within_ms: int) -> bool:
    """Was an account for `product` opened in [t - within, t]?"""
    openings: dict[str, list[int]] | None = state.get(OPENED)
    if not openings or product is None:
        return False
    return any(t - within_ms <= opened <= t for opened in openings.get(product, ()))


def hold_product(state: dict[str, Any], products: list[str] | None, product: str, t: int) -> None:
    """The customer holds `product` from `t` (unless it was closed at or after `t`: `pc` keeps
    the closing times, so an older event arriving late does not reopen a closed product)."""
    closed: dict[str, int] | None = state.get(CLOSED)
    if closed is not None and closed.get(product, t - 1) >= t:
        return
    if products is None:
        state[PRODUCTS] = [product]
    else:
        insort(products, product)


def close_product(state: dict[str, Any], products: list[str] | None, product: str, t: int) -> None:
    """An account_closed for `product` at `t`: the customer no longer holds it, unless an
    event named it after `t` (a closing that arrives late does not undo a reopening)."""
    named: dict[str, int] | None = state.get(NAMED)
    later = named is not None and named.get(product, t) > t
    if products is not None and product in products and not later:
        products.remove(product)
    closed: dict[str, int] | None = state.get(CLOSED)
    if closed is None:
        state[CLOSED] = {product: t}
    elif closed.get(product, t) <= t:
        closed[product] = t


def record_moment(
    state: dict[str, Any],
    newest: int,
    lateness_ms: int,
    window_ms: int,
    at: int,
    sign: int,
    ref: str,
    is_event: int,
) -> None:
    """Insert a ledger entry [at, sign, ref, is_event] and prune it like `Step.prune`."""
    moment: list[Any] = [at, sign, ref, is_event]
    horizon = newest - window_ms - lateness_ms
    ledger: list[list[Any]] | None = state.get(LEDGER)
    if ledger is None:
        state[LEDGER] = [moment] if at >= horizon else []
        return
    if ledger and ledger[-1][MOMENT_AT] < at:
        ledger.append(moment)  # the usual case: the newest moment so far
    else:
        insort(ledger, moment)
    if ledger[0][MOMENT_AT] < horizon:
        cut = 0
        for entry in ledger:
            if entry[MOMENT_AT] >= horizon:
                break
            cut += 1
        del ledger[:cut]
