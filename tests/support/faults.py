"""Faults injected at the client boundary, for what the embedded broker cannot do itself.

Tansu 0.6 takes records of any size (it enforces no `max.message.bytes`), so a
broker that refuses *some* records is played by `RefusingProducer`: it stands in
for `confluent_kafka.Producer`, hands every record to a real producer (or, with
no broker, acknowledges it itself) except those `refuse(key)` picks, which fail
in a later poll or flush with the error a broker gives for a record larger than
the topic takes, exactly as librdkafka reports it: through the message's
delivery callback, or the client's `on_delivery` when the message has none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Producer

DeliveryCallback = Callable[[KafkaError | None, Any], None]


class FakeMessage:
    """What a delivery callback reads of a message."""

    def __init__(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return -1


class RefusingProducer:
    """A `confluent_kafka.Producer` whose broker refuses the records `refuse(key)` picks."""

    def __init__(
        self, config: dict[str, Any], refuse: Callable[[str], bool], *, real: bool = True
    ) -> None:
        self._refuse = refuse
        self._default: DeliveryCallback | None = config.get("on_delivery")
        self._errors_only = bool(config.get("delivery.report.only.error"))
        self._inner = Producer(config) if real else None
        self._pending: list[tuple[DeliveryCallback | None, FakeMessage, bool]] = []
        self._lock = threading.Lock()
        self.refused = 0

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: str | bytes | None = None,
        on_delivery: DeliveryCallback | None = None,
        **kwargs: Any,
    ) -> None:
        text = key.decode() if isinstance(key, bytes) else (key or "")
        refused = self._refuse(text)
        if self._inner is not None and not refused:
            if on_delivery is not None:
                kwargs["on_delivery"] = on_delivery
            self._inner.produce(topic, value, key, **kwargs)
            return
        raw_key = key.encode() if isinstance(key, str) else key
        with self._lock:
            self._pending.append((on_delivery, FakeMessage(topic, raw_key, value), refused))
            self.refused += refused

    def _report(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, []
        for callback, message, refused in pending:
            error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if refused else None
            if error is None and self._errors_only and callback is None:
                continue
            target = callback or self._default
            if target is not None:
                target(error, message)
        return len(pending)

    def poll(self, timeout: float = 0) -> int:
        served = self._report()
        if self._inner is not None:
            served += self._inner.poll(timeout)
        return served

    def flush(self, timeout: float = -1) -> int:
        self._report()
        return self._inner.flush(timeout) if self._inner is not None else 0

    def purge(self, *args: Any, **kwargs: Any) -> None:
        if self._inner is not None:
            self._inner.purge(*args, **kwargs)

    def close(self, *args: Any) -> None:
        if self._inner is not None:
            self._inner.close(*args)

    def __len__(self) -> int:
        with self._lock:
            waiting = len(self._pending)
        return waiting + (len(self._inner) if self._inner is not None else 0)
