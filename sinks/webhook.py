"""The webhook sink: every action POSTed to its destination's URL as a signed CloudEvent.

A confluent-kafka consumer (group `settings.sinks.webhook_group`) reads the action
topics of the destinations that have a URL in `settings.sinks.webhook_urls`, and
POSTs each action as a CloudEvents 1.0 structured-mode JSON event (`data` is
the action's JSON form) signed as `sinks.signing` describes, with the first
of the destination's keys (`settings.sinks.webhook_secrets`, else
`settings.sinks.webhook_secret` under key id `default`). URLs must be https unless
`settings.sinks.webhook_allow_http`; `settings.sinks.webhook_ca_bundle` adds the CAs of
internal receivers to the trusted ones. Deliveries:

- each partition is delivered by its own lane, one record at a time in
  offset order (the key is the customer id, so each customer's actions arrive
  in order); partitions proceed independently, so one slow URL does not hold
  the others up;
- 5xx, 408, 425, 429, timeouts and connection errors are retried with
  exponential backoff and full jitter, at most `RetryPolicy.max_attempts`
  times, waiting at least what `Retry-After` asks (capped);
- other answers (4xx, 3xx) and exhausted retries are permanent failures: the
  original bytes go to `actions.dlq` with `moments.error.*` headers (stage
  `webhook`; undecodable records get stage `decode`/`validate`);
- a record's offset is committed only once it was delivered or its DLQ record
  acknowledged, so a crash redelivers (at-least-once: receivers drop repeated
  CloudEvent ids, which are the action ids). Reading, decoding, dead letters,
  offsets, lag and signals are the sinks' shared consume loop (`sinks.consume`);
  `WebhookSink` is its effect.

Status changes (docs/design.md 12): the sink also reads `action-status` and
POSTs each change of an action's status (open, acknowledged, reassigned,
overdue, done, lapsed) to its destination's URL as a `moments.action.status`
CloudEvent (`data`: the `ActionStatus` JSON form; id derived from the action,
status, time and event, so a redelivery repeats it), signed, retried and
dead-lettered like actions; a status of a destination without a URL is skipped.
The erasure marker of `action-status` is forwarded as `customer.forgotten` to
every routed destination (its own id: the receiver deletes the statuses it got
since the action topic's marker), and confirmed for that topic once all of them
acknowledged it.

Erasure (docs/design.md 10.1): an erasure marker on an action topic, in its
partition's lane behind every earlier action of the customer, is forwarded to
that destination as a `customer.forgotten` CloudEvent (id derived from the
keyed hash and the erasure time, so a redelivery repeats the id), signed like
actions and retried the same way; once the receiver acknowledged it (or it was
dead-lettered after a permanent failure), the sink confirms it on
`erasures.done` (`common.erasures`, `delivered` true or false), which
`moments forget --wait` reads. Actions of erased customers dated before their
erasure are dropped by the loop (the registry), under any group.

It never logs or puts into an error the secret, a full URL (webhook URLs often
hold tokens), a request body or a customer id.
"""

from __future__ import annotations

import email.utils
import json
import logging
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import certifi
import httpx
from confluent_kafka import Message

from common.erasures import ErasureConfirmations
from common.metrics import WEBHOOK_DELIVERIES
from common.privacy import keyed_customer_hash
from common.settings import Settings
from schemas.codec import codec_for, to_json_dict
from schemas.records import ActionEvent, ActionStatus
from schemas.wire import DESTINATIONS
from sinks.consume import TP, ConsumeLoop, Progress, Route, run_sink
from sinks.dead_letters import DeadLetters
from sinks.signing import KEY_ID_PATTERN, signature_headers

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
ATTEMPT_HEADER: Final = "X-Moments-Delivery-Attempt"
USER_AGENT: Final = "moments-webhook/1"
RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})
#: Records waiting in one partition's lane before the partition is paused.
MAX_LANE_BACKLOG: Final = 1000
#: Key id of `MOMENTS_WEBHOOK_SECRET`, the secret of destinations without their own keys.
DEFAULT_KEY_ID: Final = "default"


class WebhookConfigError(ValueError):
    """The webhook settings cannot work (names the MOMENTS_* variable and the problem)."""


class DeliveryCancelled(Exception):
    """The partition was revoked or the sink is stopping: leave the record uncommitted."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one delivery tries: bounded attempts, exponential backoff with full jitter."""

    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    timeout_s: float = 10.0
    max_retry_after_s: float = 300.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2^(attempt-1))]."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class DeliveryFailure:
    """A permanent delivery failure: what goes into the DLQ record's error headers."""

    error_class: str
    message: str
    attempts: int
    http_status: int | None = None


# --------------------------------------------------------------------------- CloudEvents


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def cloud_event(action: ActionEvent) -> dict[str, Any]:
    """The action as a CloudEvents 1.0 structured-mode event (a JSON object)."""
    return {
        "specversion": "1.0",
        "id": action.action_id,
        "source": f"moments/{action.rule}",
        "type": f"moments.action.{action.action}",
        "subject": action.customer_id,
        "time": _iso(action.triggered_at),
        "datacontenttype": "application/json",
        # Partitioning extension: receivers that fan out keep a customer's events together.
        "partitionkey": action.customer_id,
        "data": to_json_dict(action),
    }


def cloud_event_body(action: ActionEvent) -> bytes:
    """The exact bytes POSTed (and signed) for an action: compact UTF-8 JSON."""
    return json.dumps(cloud_event(action), ensure_ascii=False, separators=(",", ":")).encode()


#: The CloudEvent type of a change of an action's status (docs/design.md 12).
STATUS_TYPE: Final = "moments.action.status"


def status_event_id(status: ActionStatus) -> str:
    """A change's CloudEvent id: the same for a redelivery, another for any other change."""
    made_by = f"/{status.event_id}" if status.event_id else ""
    return f"{status.action_id}/{status.status}/{status.at}{made_by}"


def status_cloud_event(status: ActionStatus) -> dict[str, Any]:
    """A change of an action's status as a CloudEvents 1.0 structured-mode event."""
    return {
        "specversion": "1.0",
        "id": status_event_id(status),
        "source": f"moments/{status.rule}",
        "type": STATUS_TYPE,
        "subject": status.customer_id,
        "time": _iso(status.at),
        "datacontenttype": "application/json",
        "partitionkey": status.customer_id,
        "data": to_json_dict(status),
    }


def status_body(status: ActionStatus) -> bytes:
    """The exact bytes POSTed (and signed) for a change of status."""
    event = status_cloud_event(status)
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


#: The CloudEvent type of an erasure forwarded to a destination.
FORGOTTEN_TYPE: Final = "customer.forgotten"


@dataclass(frozen=True, slots=True)
class Forgotten:
    """An erasure marker for one destination: the customer to delete and when they were erased."""

    customer_id: str
    erased_at_ms: int
    destination: str
    #: The marker came from `action-status` (its event gets an id of its own).
    statuses: bool = False

    def __repr__(self) -> str:  # never the customer id
        return f"Forgotten({self.destination}, {self.erased_at_ms})"


def forgotten_event(forgotten: Forgotten) -> dict[str, Any]:
    """The erasure as a CloudEvents 1.0 event: the receiver deletes what it holds of `subject`
    (the customer id) from before `time`. Its id repeats on a redelivery."""
    customer_hash = keyed_customer_hash(forgotten.customer_id)
    statuses = "-statuses" if forgotten.statuses else ""
    return {
        "specversion": "1.0",
        "id": f"forgotten-{customer_hash[:32]}-{forgotten.erased_at_ms}{statuses}",
        "source": "moments/erasure",
        "type": FORGOTTEN_TYPE,
        "subject": forgotten.customer_id,
        "time": _iso(forgotten.erased_at_ms),
        "datacontenttype": "application/json",
        "partitionkey": forgotten.customer_id,
        "data": {"customer_id": forgotten.customer_id, "erased_at": _iso(forgotten.erased_at_ms)},
    }


def forgotten_body(forgotten: Forgotten) -> bytes:
    """The exact bytes POSTed (and signed) for an erasure."""
    return json.dumps(
        forgotten_event(forgotten), ensure_ascii=False, separators=(",", ":")
    ).encode()


def redact_url(url: str) -> str:
    """Scheme, host and port only: paths and queries of webhook URLs often hold tokens."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}/…"


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds asked by a `Retry-After` header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --------------------------------------------------------------------------- HTTP delivery


class WebhookDelivery:
    """POSTs one action with retries; knows HTTP and signing, no Kafka.

    `deliver` returns None once a 2xx answer came, a `DeliveryFailure` for a
    permanent failure, and raises `DeliveryCancelled` when `cancelled` is set
    while it waits between attempts.
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        secret: str | bytes | Mapping[str, tuple[str, str | bytes]],
        *,
        policy: RetryPolicy | None = None,
        client: httpx.Client | None = None,
        rng: random.Random | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`secret`: one secret for every destination (key id `default`), or per
        destination the (key id, secret) that signs its requests."""
        self.urls = dict(urls)
        if isinstance(secret, str | bytes):
            self._keys = {d: (DEFAULT_KEY_ID, secret) for d in self.urls}
        else:
            self._keys = dict(secret)
        # httpx logs every request's full URL at INFO, and webhook URLs hold tokens.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.policy = policy or RetryPolicy()
        self._own_client = client is None
        self.client = client or httpx.Client(
            timeout=self.policy.timeout_s,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            verify=verify,
        )
        self._rng = rng or random.Random()

    def key_id(self, destination: str) -> str | None:
        """Id of the key that signs the destination's requests (never the secret)."""
        key = self._keys.get(destination)
        return None if key is None else key[0]

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def deliver(
        self, action: ActionEvent, cancelled: threading.Event | None = None
    ) -> DeliveryFailure | None:
        return self.deliver_body(
            action.destination, cloud_event_body(action), f"action {action.action_id}", cancelled
        )

    def deliver_body(
        self,
        destination: str,
        body: bytes,
        what: str,
        cancelled: threading.Event | None = None,
    ) -> DeliveryFailure | None:
        """POST `body` (a CloudEvent) to the destination with retries; `what` names it in logs
        (never customer data)."""
        url = self.urls.get(destination)
        key = self._keys.get(destination)
        if url is None or key is None:
            WEBHOOK_DELIVERIES.labels(_destination_label(destination), "failed").inc()
            return DeliveryFailure(
                "NoRoute", f"no webhook URL configured for destination {destination!r}", 0
            )
        policy = self.policy
        for attempt in range(1, policy.max_attempts + 1):
            failure, retryable, wait_at_least = self._attempt(url, key, body, attempt)
            if failure is None:
                WEBHOOK_DELIVERIES.labels(destination, "delivered").inc()
                return None
            if not retryable or attempt == policy.max_attempts:
                WEBHOOK_DELIVERIES.labels(destination, "failed").inc()
                if retryable:
                    failure = DeliveryFailure(
                        failure.error_class,
                        f"gave up after {attempt} attempts: {failure.message}",
                        attempt,
                        failure.http_status,
                    )
                log.warning(
                    "webhook %s: %s failed permanently after %d attempt(s): %s",
                    destination,
                    what,
                    attempt,
                    failure.error_class,
                )
                return failure
            WEBHOOK_DELIVERIES.labels(destination, "retried").inc()
            delay = policy.backoff_s(attempt, self._rng)
            if wait_at_least is not None:
                delay = max(delay, min(wait_at_least, policy.max_retry_after_s))
            log.info(
                "webhook %s: attempt %d for %s: %s; retrying in %.2f s",
                destination,
                attempt,
                what,
                failure.error_class,
                delay,
            )
            if cancelled is not None:
                if cancelled.wait(delay):
                    raise DeliveryCancelled
            else:
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self, url: str, key: tuple[str, str | bytes], body: bytes, attempt: int
    ) -> tuple[DeliveryFailure | None, bool, float | None]:
        """One POST signed with `key` = (key id, secret): (failure, retryable, Retry-After s)."""
        key_id, secret = key
        headers = {
            "Content-Type": CONTENT_TYPE,
            "User-Agent": USER_AGENT,
            ATTEMPT_HEADER: str(attempt),
            **signature_headers(secret, body, url, key_id),
        }
        where = redact_url(url)
        try:
            response = self.client.post(url, content=body, headers=headers)
        except httpx.UnsupportedProtocol as exc:
            return DeliveryFailure(type(exc).__name__, f"POST {where}: {exc}", attempt), False, None
        except httpx.TransportError as exc:  # timeouts, refused connections, resets
            text = str(exc).splitlines()[0][:200] if str(exc) else "no detail"
            failure = DeliveryFailure(type(exc).__name__, f"POST {where}: {text}", attempt)
            return failure, True, None
        status = response.status_code
        if 200 <= status < 300:
            return None, False, None
        excerpt = " ".join(response.text[:200].split())
        failure = DeliveryFailure(
            "HTTPStatusError",
            f"POST {where} answered {status} {response.reason_phrase}"
            + (f": {excerpt}" if excerpt else ""),
            attempt,
            status,
        )
        retryable = status >= 500 or status in RETRYABLE_STATUSES
        return failure, retryable, retry_after_s(response.headers.get("Retry-After"))


def _destination_label(destination: str) -> str:
    return destination if destination in DESTINATIONS else "other"


# --------------------------------------------------------------------------- Kafka side


def _check_settings(settings: Settings) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """The routes (destination → URL) and signing keys (destination → (key id, secret)).

    Raises `WebhookConfigError` naming the variable, the destination and the
    problem, never a secret or a URL's path (URLs often hold tokens).
    """
    urls = dict(settings.sinks.webhook_urls)
    if not urls:
        raise WebhookConfigError(
            "MOMENTS_WEBHOOK_URLS is empty: give a JSON object of destination to URL, "
            'e.g. {"care": "https://care.example/hooks/moments"}'
        )
    for destination, url in urls.items():
        if destination not in DESTINATIONS:
            raise WebhookConfigError(
                f"MOMENTS_WEBHOOK_URLS: unknown destination {destination!r} "
                f"(known: {', '.join(DESTINATIONS)})"
            )
        try:
            scheme = httpx.URL(url).scheme
        except (httpx.InvalidURL, TypeError):
            scheme = ""
        if scheme not in ("http", "https"):
            raise WebhookConfigError(f"MOMENTS_WEBHOOK_URLS[{destination}]: not an http(s) URL")
        if scheme == "http" and not settings.sinks.webhook_allow_http:
            raise WebhookConfigError(
                f"MOMENTS_WEBHOOK_URLS[{destination}]: {redact_url(url)} is plain http; use https"
                " (or set MOMENTS_WEBHOOK_ALLOW_HTTP=true for a local trial)"
            )
    return urls, _signing_keys(settings, urls)


def _signing_keys(settings: Settings, urls: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Per routed destination, the (key id, secret) that signs: its first listed key, else
    `MOMENTS_WEBHOOK_SECRET` under key id `default`."""
    for destination, keys in settings.sinks.webhook_secrets.items():
        where = f"MOMENTS_WEBHOOK_SECRETS[{destination}]"
        if destination not in DESTINATIONS:
            raise WebhookConfigError(
                f"MOMENTS_WEBHOOK_SECRETS: unknown destination {destination!r} "
                f"(known: {', '.join(DESTINATIONS)})"
            )
        if not keys:
            raise WebhookConfigError(f"{where} is empty: list [key id, secret] pairs, newest first")
        for n, (key_id, secret) in enumerate(keys):
            if not KEY_ID_PATTERN.fullmatch(key_id):
                raise WebhookConfigError(
                    f"{where}[{n}]: the key id must be 1 to 64 of A-Z a-z 0-9 . _ -"
                )
            if not secret.get_secret_value():
                raise WebhookConfigError(f"{where}[{n}] (key id {key_id}): the secret is empty")
    fallback = (
        settings.sinks.webhook_secret.get_secret_value() if settings.sinks.webhook_secret else ""
    )
    signing: dict[str, tuple[str, str]] = {}
    for destination in urls:
        listed = settings.sinks.webhook_secrets.get(destination)
        if listed:
            key_id, secret = listed[0]
            signing[destination] = (key_id, secret.get_secret_value())
        elif fallback:
            signing[destination] = (DEFAULT_KEY_ID, fallback)
        else:
            raise WebhookConfigError(
                f"MOMENTS_WEBHOOK_SECRET is not set and MOMENTS_WEBHOOK_SECRETS has no key for"
                f" {destination}: webhook requests must be signed"
            )
    return signing


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """TLS verification for webhook requests: the public CAs, plus those of `ca_bundle`."""
    if ca_bundle is None:
        return True
    context = ssl.create_default_context(cafile=certifi.where())
    try:
        context.load_verify_locations(cafile=str(ca_bundle))
    except FileNotFoundError:
        raise WebhookConfigError(f"MOMENTS_WEBHOOK_CA_BUNDLE: {ca_bundle}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise WebhookConfigError(
            f"MOMENTS_WEBHOOK_CA_BUNDLE: {ca_bundle}: not a readable PEM file of CA"
            f" certificates ({type(exc).__name__})"
        ) from None
    return context


#: What a lane delivers: an action, a change of status, an erasure.
Delivered = ActionEvent | ActionStatus | Forgotten


@dataclass
class _Lane:
    """One partition's actions, delivered in offset order on a thread of their own."""

    topic: str
    partition: int
    handle: Callable[[Delivered, Message, threading.Event], None]
    failed: Callable[[BaseException], None]
    records: queue.SimpleQueue[tuple[Delivered, Message] | None] = field(
        default_factory=queue.SimpleQueue
    )
    cancelled: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._run, name=f"webhook-{self.topic}-{self.partition}", daemon=True
        )
        self.thread.start()

    def put(self, action: Delivered, msg: Message) -> None:
        self.records.put((action, msg))

    @property
    def backlog(self) -> int:
        return self.records.qsize()

    def stop(self, timeout_s: float) -> None:
        """Finish the record in flight (no new attempts), drop the queued ones."""
        self.cancelled.set()
        self.records.put(None)
        if self.thread is not None:
            self.thread.join(timeout_s)
            if self.thread.is_alive():
                log.warning("webhook lane %s[%d] did not stop in time", self.topic, self.partition)

    def _run(self) -> None:
        while not self.cancelled.is_set():
            item = self.records.get()
            if item is None or self.cancelled.is_set():
                return
            try:
                self.handle(*item, self.cancelled)
            except DeliveryCancelled:
                return
            except BaseException as exc:  # a bug: stop the sink, leave the offset uncommitted
                self.failed(exc)
                return


class WebhookSink:
    """The webhook sink's effect in the consume loop: a lane per partition delivers each
    action (see the module docstring); the loop reads, decodes, dead-letters undecodable
    records and commits the offsets of records delivered or dead-lettered."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: RetryPolicy | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        urls, signing = _check_settings(settings)
        verify = tls_context(settings.sinks.webhook_ca_bundle)
        self.settings = settings
        self.group = settings.sinks.webhook_group
        self.topics = [settings.topics.action(d) for d in DESTINATIONS if d in urls]
        self.status_topic = settings.topics.action_status
        self.dlq_topic = settings.topics.actions_dlq
        self.delivery = WebhookDelivery(urls, signing, policy=policy, client=client, verify=verify)
        self.codec = codec_for(ActionEvent, settings.kafka.schema_registry_url)
        self.status_codec = codec_for(ActionStatus, settings.kafka.schema_registry_url)
        self._lanes: dict[TP, _Lane] = {}
        self._progress = Progress()
        self._dead_letters: DeadLetters | None = None
        self._destinations = {settings.topics.action(d): d for d in DESTINATIONS}
        self._confirmations: ErasureConfirmations | None = None

    def routes(self) -> dict[str, Route]:
        """The routed action topics and `action-status`; undecodable records go to
        `actions.dlq`."""
        routes = {topic: Route(self.codec.decode, self.dlq_topic) for topic in self.topics}
        routes[self.status_topic] = Route(self.status_codec.decode, self.dlq_topic)
        return routes

    # -- the effect (loop thread)

    def start(self, progress: Progress, dead_letters: DeadLetters) -> bool:
        self._progress, self._dead_letters = progress, dead_letters
        self._confirmations = ErasureConfirmations(self.settings, "webhook", self.group)
        log.info(
            "webhook sink: group %s, topics %s, routes %s",
            self.group,
            ", ".join(self.topics),
            ", ".join(
                f"{d}→{redact_url(u)} (key {self.delivery.key_id(d)})"
                for d, u in self.delivery.urls.items()
            ),
        )
        return True

    def take(self, record: Any, message: Message) -> None:
        self._lane(message).put(record, message)

    def forget(self, customer_id: str, erased_at_ms: int, message: Message) -> None:
        """An erasure marker: forwarded in the partition's lane, behind the actions before it."""
        topic = str(message.topic())
        if topic == self.status_topic:  # for every routed destination
            forgotten = Forgotten(customer_id, erased_at_ms, "", statuses=True)
        else:
            forgotten = Forgotten(customer_id, erased_at_ms, self._destinations.get(topic, ""))
        self._lane(message).put(forgotten, message)

    def _lane(self, message: Message) -> _Lane:
        key = (str(message.topic()), message.partition() or 0)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(*key, self.handle, self._progress.failed)
            lane.start()
        return lane

    def tick(self) -> None:
        if self._confirmations is not None:
            self._confirmations.poll()

    def room(self) -> int:
        return 500

    def poll_timeout(self) -> float:
        return 0.2

    def held(self, assigned: Collection[TP], paused: Collection[TP]) -> set[TP]:
        """Partitions whose lane holds `MAX_LANE_BACKLOG` records (until half are done)."""
        return {
            key
            for key, lane in self._lanes.items()
            if lane.backlog >= (MAX_LANE_BACKLOG // 2 if key in paused else MAX_LANE_BACKLOG)
        }

    def revoke(self, partitions: Collection[TP]) -> None:
        self._stop_lanes(list(partitions))

    def close(self) -> None:
        try:
            self._stop_lanes(list(self._lanes))
        finally:
            self.delivery.close()
            if self._confirmations is not None:
                self._confirmations.flush(10.0)

    def _stop_lanes(self, keys: list[TP]) -> None:
        lanes = [self._lanes.pop(k) for k in keys if k in self._lanes]
        for lane in lanes:
            lane.cancelled.set()
        for lane in lanes:
            lane.stop(self.delivery.policy.timeout_s + 5.0)

    # -- per record (lane threads)

    def _deliver_forgotten(
        self, forgotten: Forgotten, cancelled: threading.Event
    ) -> DeliveryFailure | None:
        """An erasure to its destination; one from `action-status` to every routed
        destination (the first failure, after trying them all)."""
        if not forgotten.statuses:
            return self.delivery.deliver_body(
                forgotten.destination, forgotten_body(forgotten), "an erasure", cancelled
            )
        first: DeliveryFailure | None = None
        for destination in [d for d in DESTINATIONS if d in self.delivery.urls]:
            each = Forgotten(forgotten.customer_id, forgotten.erased_at_ms, destination, True)
            failure = self.delivery.deliver_body(
                destination, forgotten_body(each), "an erasure of statuses", cancelled
            )
            first = first or failure
        return first

    def handle(self, action: Delivered, msg: Message, cancelled: threading.Event) -> None:
        """Deliver one action, change of status or erasure, or dead-letter it; an action or
        status is done once one of both is durable, an erasure once its confirmation is too."""
        key, offset = (str(msg.topic()), msg.partition() or 0), msg.offset() or 0
        progress = self._progress
        done: Callable[[], None] = lambda: progress.done(key, (offset,))  # noqa: E731
        if isinstance(action, ActionStatus):
            if action.destination not in self.delivery.urls:
                done()  # a destination this sink does not serve
                return
            failure = self.delivery.deliver_body(
                action.destination,
                status_body(action),
                f"status {action.status} of action {action.action_id}",
                cancelled,
            )
            if failure is None:
                done()
                return
        elif isinstance(action, Forgotten):
            failure = self._deliver_forgotten(action, cancelled)
            confirmations = self._confirmations
            assert confirmations is not None, "handle before start()"
            forgotten = action

            def done() -> None:  # confirmed once delivered or dead-lettered
                confirmations.send(
                    forgotten.customer_id,
                    forgotten.erased_at_ms,
                    key[0],
                    failure is None,
                    lambda: progress.done(key, (offset,)),
                )

            if failure is None:
                done()
                return
        else:
            failure = self.delivery.deliver(action, cancelled)
            if failure is None:
                done()
                return
        extra = {
            "attempts": str(failure.attempts),
            "destination": action.destination or "every routed destination",
        }
        if failure.http_status is not None:
            extra["http_status"] = str(failure.http_status)
        assert self._dead_letters is not None, "handle before start()"
        self._dead_letters.send(
            self.dlq_topic,
            msg.key(),
            msg.value(),
            msg.headers(),  # a re-driven record that fails again carries only the latest error
            ("webhook", failure.error_class, failure.message),
            (key[0], key[1], offset),
            on_acked=done,
            **extra,
        )


def run_webhook_sink(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    policy: RetryPolicy | None = None,
    client: httpx.Client | None = None,
) -> None:
    """Run the webhook sink until `stop` is set (or SIGTERM/SIGINT in the main thread).

    Serves Prometheus metrics on `settings.metrics.metrics_port` when it is set.
    Raises `WebhookConfigError` for unusable settings before touching Kafka.
    """
    sink = WebhookSink(settings, policy=policy, client=client)
    stop = stop if stop is not None else threading.Event()
    run_sink(ConsumeLoop(settings, sink.group, sink.routes(), sink, stop))
