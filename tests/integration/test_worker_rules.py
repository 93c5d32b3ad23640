"""The worker follows the `rules` topic on a real broker: what it runs, takes and refuses."""

from __future__ import annotations

from pathlib import Path

from common.rules_topic import publish_pack
from common.settings import Settings
from moments.stack import wait_for_port
from processors.engine.switching import pack_id
from tests.support.packs import DEFAULT_TEXT, TENURE_10, tenure_version, variant
from tests.support.scrape import metrics_settings, value, wait_for_scrape
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
