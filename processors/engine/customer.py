"""The customer's profile in the state: the products held and the relationship ledger.

Functions of the customer's state dict (see `state.py` for its keys), used when an
event is applied and when an action fires. Pure.
"""

from __future__ import annotations

from bisect import insort
from typing import Any

from processors.engine.state import CLOSED, LEDGER, MOMENT_AT, PRODUCTS


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
    """An account_closed for `product` at `t`: the customer no longer holds it."""
    if products is not None and product in products:
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
