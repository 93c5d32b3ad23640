"""The worker follows the `rules` topic on a real broker: what it runs, takes and refuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from common.rules_topic import publish_pack
from common.settings import Settings
from moments.stack import wait_for_port
from processors.engine.switching import pack_id
from tests.support.packs import DEFAULT_TEXT, TENURE_10, tenure_version, variant
from tests.support.scrape import Samples, metrics_settings, value, wait_for_scrape
from tests.support.worker_process import running_worker


def test_the_worker_runs_the_rules_path_refuses_what_check_refuses_and_takes_a_new_version(
    settings: Settings, tmp_path: Path
) -> None:
    start = variant(tmp_path, "v2.yaml", TENURE_10, tenure_version(2)).read_text()
    settings = metrics_settings(settings).replace(rules_path=tmp_path / "v2.yaml")
    newer = variant(tmp_path, "v3.yaml", ("min_tenure_years: 5", "min_tenure_years: 7"))
    newer_text = newer.read_text().replace(
        "  - id: recognize_tenure\n    version: 1", "  - id: recognize_tenure\n    version: 3"
    )
    port = settings.metrics.metrics_port
    with running_worker(settings, tmp_path / "worker.log") as worker:
        wait_for_port("127.0.0.1", port, timeout_s=30)
        # no record on the topic: MOMENTS_RULES_PATH
        samples = wait_for_scrape(
            port, worker, lambda s: value(s, "moments_rules_pack_info", pack=pack_id(start)) == 1
        )
        assert value(samples, "moments_rules_active", rule="recognize_tenure", version="2") == 1
        # the default pack lowers recognize_tenure to version 1: refused; so is broken YAML
        publish_pack(settings, "default", DEFAULT_TEXT, "test")
        publish_pack(settings, "default", "rules: [\n", "test")
        publish_pack(settings, "other", newer_text, "test")  # another pack's name: not ours
        samples = wait_for_scrape(
            port, worker, lambda s: value(s, "moments_rules_refused_total") >= 2
        )
        assert value(samples, "moments_rules_pack_info", pack=pack_id(start)) == 1
        # version 3: taken, while the worker runs
        publish_pack(settings, "default", newer_text, "test")
        samples = wait_for_scrape(
            port,
            worker,
            lambda s: value(s, "moments_rules_pack_info", pack=pack_id(newer_text)) == 1,
        )
        worker.check_alive()
    assert value(samples, "moments_rules_refused_total") == 2
    assert value(samples, "moments_rules_pack_info", pack=pack_id(start)) == 0
    assert value(samples, "moments_rules_active", rule="recognize_tenure", version="3") == 1
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert log.count("rule pack refused") == 2 and "recognize_tenure" in log


def test_the_worker_keeps_committing_after_many_publishes_of_a_large_pack(
    settings: Settings, tmp_path: Path
) -> None:
    """Each partition used to keep the YAML of every pack it ran in one changelog value:
    a few publishes of a 200 KB pack and the changelog commit failed (MSG_SIZE_TOO_LARGE)
    on every start. Now a partition keeps the packs its timers need, each once."""
    import secrets
    import time

    from processors.offline import partition_for
    from producers.publisher import Publisher
    from tests.support.worker_process import event

    settings = metrics_settings(settings).replace(idle_tick_s=3600.0)
    port = settings.metrics.metrics_port
    customers = [f"pub-{i:02d}" for i in range(16)]
    partitions = {partition_for(c, settings.kafka.interactions_partitions) for c in customers}
    base = int(time.time() * 1000) - 3_600_000
    rounds = 6

    def consumed(count: int) -> Callable[[Samples], bool]:
        return lambda s: (
            value(s, "moments_events_consumed_total", channel="call", type="inquiry") >= count
        )

    def running(pid: str) -> Callable[[Samples], bool]:
        return lambda s: value(s, "moments_rules_pack_info", pack=pid) == 1

    def switched(count: int) -> Callable[[Samples], bool]:
        return lambda s: value(s, "moments_rules_switches_total") >= count

    with running_worker(settings, tmp_path / "worker.log") as worker:
        wait_for_port("127.0.0.1", port, timeout_s=30)
        with Publisher(settings) as publisher:
            for n in range(rounds):
                # ~200 KB of comment that does not compress away: a new pack id each time
                text = f"# {secrets.token_hex(100_000)}\n{DEFAULT_TEXT}"
                publish_pack(settings, "default", text, "test")
                pid = pack_id(text)
                wait_for_scrape(port, worker, running(pid))
                for customer in customers:
                    publisher.publish(event(customer, "inquiry", base + n * 60_000))
                publisher.flush()
                # applied before the next publish; a partition that had seen no event
                # started on the pack (no switch), every other one switched
                wait_for_scrape(port, worker, consumed((n + 1) * len(customers)))
                wait_for_scrape(port, worker, switched(n * len(partitions)))
        worker.check_alive()
        assert worker.stop() == 0, worker.log_tail()  # a clean stop commits
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "MSG_SIZE_TOO_LARGE" not in log and "Traceback" not in log
    # a new process resumes every partition from what was committed: no event again
    with running_worker(settings, tmp_path / "again.log") as worker:
        wait_for_port("127.0.0.1", port, timeout_s=30)
        with Publisher(settings) as publisher:
            for customer in customers:
                publisher.publish(event(customer, "inquiry", base + rounds * 60_000))
        samples = wait_for_scrape(port, worker, consumed(len(customers)))
        worker.check_alive()
    assert value(samples, "moments_events_consumed_total", channel="call", type="inquiry") == len(
        customers
    )
    assert "Traceback" not in (tmp_path / "again.log").read_text(errors="replace")
