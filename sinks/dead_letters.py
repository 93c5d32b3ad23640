"""Dead letters of the sinks: a record that cannot take effect, to its DLQ topic, never lost.

A dead letter keeps the original key and value (and the original headers, when
the record came straight from Kafka) and adds the `moments.error.*` headers of
`schemas.wire.dead_letter_headers`: what failed (stage, class, message) and
where the record came from (topic, partition, offset). `DeadLetters.send`
returns at once; the caller hears through `on_acked` when the broker has the
letter, and only then may the source record's offset be committed. A letter the
broker refuses is sent again until it is acknowledged.

Only the error message names the problem in detail, and it travels in the
headers: the logs get the error class and where the record came from, never a
value (it may quote customer data).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from common.metrics import DLQ_RECORDS
from common.settings import Settings
from schemas.wire import dead_letter_headers

log = logging.getLogger(__name__)

#: How long a refused letter waits before it is sent again.
RESEND_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One letter on its way: where it goes, the bytes, and whom to tell when it is durable."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    stage: str
    on_acked: Callable[[], None]


class DeadLetters:
    """The sinks' dead-letter producer: idempotent, acknowledged, every letter re-sent until
    the broker has it. Thread-safe: lanes and writer threads send, the loop polls."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(
            settings.kafka_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "partitioner": "murmur2_random",  # a key's partition as from a Java client
                }
            )
        )
        self._lock = threading.Lock()
        self._again: list[tuple[float, DeadLetter]] = []
        self._pending = 0

    def send(
        self,
        dlq_topic: str,
        key: bytes | None,
        value: bytes | None,
        original_headers: Any,
        error: tuple[str, str, str],
        source: tuple[str, int, int],
        on_acked: Callable[[], None],
        **extra: str,
    ) -> None:
        """Dead-letter one record: `error` = (stage, error class, message), `source` = (topic,
        partition, offset); `on_acked()` once the broker acknowledged the letter."""
        stage, error_class, message = error
        topic, partition, offset = source
        headers: list[tuple[str, str | bytes | None]] = list(
            dead_letter_headers(original_headers, stage, error_class, message, source, **extra)
        )
        log.warning("%s[%s]@%s to %s: %s", topic, partition, offset, dlq_topic, error_class)
        with self._lock:
            self._pending += 1
        self._produce(DeadLetter(dlq_topic, key, value, headers, stage, on_acked))

    @property
    def pending(self) -> int:
        """Letters sent and not acknowledged yet."""
        with self._lock:
            return self._pending

    def poll(self) -> None:
        """Serve acknowledgements and send again the letters the broker refused a while ago."""
        self._producer.poll(0)
        now = time.monotonic()
        with self._lock:
            due = [letter for at, letter in self._again if at <= now]
            self._again = [(at, letter) for at, letter in self._again if at > now]
        for letter in due:
            self._produce(letter)

    def flush(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for the letters sent; the number still unacknowledged."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._producer.flush(max(0.0, min(1.0, deadline - time.monotonic())))
            self.poll()
            left = self.pending
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    def _produce(self, letter: DeadLetter) -> None:
        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is None:
                with self._lock:
                    self._pending -= 1
                DLQ_RECORDS.labels(letter.stage).inc()
                letter.on_acked()
            else:
                self._resend(letter, str(err))

        try:
            self._producer.produce(
                letter.topic,
                key=letter.key,
                value=letter.value,
                headers=letter.headers,
                on_delivery=delivered,
            )
        except (KafkaException, BufferError) as exc:
            self._resend(letter, str(exc))
        self._producer.poll(0)

    def _resend(self, letter: DeadLetter, problem: str) -> None:
        log.error("cannot write to %s, sending again: %s", letter.topic, problem)
        with self._lock:
            self._again.append((time.monotonic() + RESEND_AFTER_S, letter))
