"""The worker's rules follower: the latest acceptable pack on the compacted `rules` topic.

`RulesFollower` knows the pack the worker starts from (`MOMENTS_RULES_PATH` or
the default pack) and takes every record of its pack name
(`MOMENTS_RULES_PACK`) from the `rules` topic in publication order (`offer`):
a record that is not a valid pack (predicates only from `MOMENTS_PREDICATE_MODULES`),
that is unsigned or not signed by a known publisher key while
`MOMENTS_RULES_SIGNING_KEYS` is set, or that changes a rule without raising its
version against the pack it would replace (what `moments rules check OLD NEW`
refuses; a pack accepted before, e.g. a rollback, is always taken), is refused
(logged with its offset and problems, counted in
`moments_rules_refused_total`) and the current pack stays. `catch_up` reads the
topic once before the worker starts; `start` follows it in a thread with its
own consumer (no group: every worker reads every record). The worker reads
`current` between batches and switches its partitions to it
(`processors.engine.switching`). The gauges `moments_rules_active` and
`moments_rules_pack_info` show the accepted pack (its id is the hash `moments rules
history` shows). Records are told apart by their value, never their key, so a topic
keyed by pack name alone (before versions) is followed the same way.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from common.metrics import RULES_ACTIVE, RULES_PACK, RULES_REFUSED
from common.rules_topic import Published, decode_published, pack_history, signature_problem
from common.settings import Settings
from common.topics import BrokerUnavailable, ensure_rules_topic, quiet_client_logger
from processors.engine import DEFAULT_PACK_PATH, RulePack, RulePackError
from processors.engine.switching import pack_from_text, pack_id, refusal

log = logging.getLogger(__name__)

_kafka_log = quiet_client_logger("moments.kafka.rules_follower")


@dataclass(frozen=True, slots=True)
class AcceptedPack:
    """A pack the worker runs: its id, YAML, parsed form and where it came from."""

    pid: str
    text: str
    pack: RulePack
    source: str
    offset: int | None = None  # on the rules topic; None for the start-up pack
    #: Who published it: the publisher key's name when packs are signed.
    author: str | None = None


def startup_pack(settings: Settings) -> AcceptedPack:
    """The pack with no `rules` record: `MOMENTS_RULES_PATH` or the default pack."""
    path = (
        Path(settings.engine.rules_path)
        if settings.engine.rules_path is not None
        else DEFAULT_PACK_PATH
    )
    text = path.read_text(encoding="utf-8")
    pack = pack_from_text(text, str(path), predicate_modules=settings.engine.predicate_modules)
    return AcceptedPack(pack_id(text), text, pack, str(path))


class RulesFollower:
    """Accepts or refuses the packs published under one name; `current` is the one to run."""

    def __init__(self, settings: Settings, start: AcceptedPack) -> None:
        self.settings = settings
        self.current = start
        #: Ids of every pack accepted so far (a rollback to one of them is never refused).
        self.known = {start.pid}
        self._next_offset = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _show(start)

    def offer(self, record: Published) -> bool:
        """Take one record of the rules topic (in order); True when it became `current`."""
        self._next_offset = record.offset + 1
        if record.pack != self.settings.engine.rules_pack:
            return False
        source = f"{self.settings.topics.rules}@{record.offset}"
        keys = self.settings.engine.rules_signing_keys
        unsigned = signature_problem(record, keys) if keys else None
        if unsigned is not None:
            return self._refuse(record, [f"{source}: {unsigned}"])
        modules = self.settings.engine.predicate_modules
        try:
            pack = pack_from_text(record.yaml, source, predicate_modules=modules)
        except RulePackError as exc:
            return self._refuse(record, exc.problems)
        pid = pack_id(record.yaml)
        if pid == self.current.pid:
            return False
        problems = refusal(self.current.pack, pack, pid, self.known)
        if problems:
            return self._refuse(record, problems)
        author = record.signed_by if keys else record.author
        self.current = AcceptedPack(pid, record.yaml, pack, source, record.offset, author)
        self.known.add(pid)
        _show(self.current)
        log.info(
            "rule pack %s accepted from %s (version %s, published %s by %s): %s",
            pid,
            source,
            record.version if record.version is not None else "from before versions",
            record.published_at,
            author if keys else f"{author!r} (unsigned)",
            ", ".join(f"{r.id} v{r.version}" for r in pack.rules),
        )
        return True

    def _refuse(self, record: Published, problems: list[str]) -> bool:
        RULES_REFUSED.inc()
        log.warning(
            "rule pack refused at %s@%d, keeping %s: %s",
            self.settings.topics.rules,
            record.offset,
            self.current.pid,
            "; ".join(problems),
        )
        return False

    def catch_up(self) -> None:
        """Take every record already on the topic (blocking; before the worker starts)."""
        for record in pack_history(self.settings):
            self.offer(record)

    def start(self) -> None:
        """Follow the topic from where `catch_up` stopped, in a daemon thread."""
        ensure_rules_topic(self.settings)
        self._thread = threading.Thread(target=self._follow, name="rules-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _follow(self) -> None:
        """Follow until `stop`; a broker error is logged and the follower starts again from
        the next record after a pause (a follower that stopped would leave this worker on
        an old pack, which the disagreement alert would be the only one to notice)."""
        pause_s = 1.0
        while not self._stop.is_set():
            try:
                self._follow_once()
                return
            except (KafkaException, BrokerUnavailable) as exc:
                log.error(
                    "following %s failed (%s); trying again in %.0f s",
                    self.settings.topics.rules,
                    exc,
                    pause_s,
                )
            self._stop.wait(pause_s)
            pause_s = min(pause_s * 2, 30.0)

    def _follow_once(self) -> None:
        topic = self.settings.topics.rules
        consumer = Consumer(
            self.settings.kafka_config(
                logger=_kafka_log,
                **{
                    "group.id": f"moments-rules-follower-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                },
            )
        )
        start = self._next_offset or OFFSET_BEGINNING
        try:
            consumer.assign([TopicPartition(topic, 0, start)])
            while not self._stop.is_set():
                message = consumer.poll(0.25)
                if message is None or message.error() is not None:
                    continue
                record = decode_published(message.offset() or 0, message.value())
                if record is not None:
                    self.offer(record)
        finally:
            consumer.close()


def _show(accepted: AcceptedPack) -> None:
    """Set the gauges of the pack the worker runs."""
    RULES_ACTIVE.clear()
    for rule in accepted.pack.rules:
        RULES_ACTIVE.labels(rule.id, str(rule.version)).set(1)
    RULES_PACK.clear()
    RULES_PACK.labels(accepted.pid).set(1)
