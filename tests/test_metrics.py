"""/metrics as Prometheus scrapes it, from a real bridge taking real hits."""

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Config
from bridge.metrics import HIT_BUCKETS, Metrics
from tests.conftest import (
    Mosquitto,
    RunningBridge,
    Watcher,
    make_config,
    start_bridge,
    unique_base,
    wait_until,
)

MAC = "001565aabbcc"


def scrape(rb: RunningBridge) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = rb.hit("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def bridge_with(mosquitto: Mosquitto) -> Iterator[list[RunningBridge]]:
    """Bridges a test starts with a config of its own; stopped after it."""
    started: list[RunningBridge] = []
    yield started
    for rb in started:
        rb.stop()


def start(mosquitto: Mosquitto, started: list[RunningBridge], config: Config) -> RunningBridge:
    rb = start_bridge(config, mosquitto.endpoint)
    started.append(rb)
    return rb


def test_counters_move_after_hits(running: RunningBridge, watcher: Watcher) -> None:
    before = scrape(running)
    assert value(before, "amego_mqtt_connected") == 1
    for _ in range(3):
        assert running.hit(f"/offhook/yealink?device={MAC}").status_code == 200
    assert running.hit(f"/Peripheral-Information/yealink?device={MAC}").status_code == 200
    assert running.hit(f"/incoming/nosuchvendor?device={MAC}&remote=555").status_code == 200
    assert running.hit("/a/b/c").status_code == 404
    assert running.hit("/offhook/yealink?remote=%zz").status_code == 400
    watcher.wait_for(f"{running.base}/{MAC}/event", lambda p: p["event_type"] == "incoming_call")

    after = scrape(running)
    hits = "amego_hits_total"
    assert value(after, hits, event="off_hook", phone_type="yealink", outcome="accepted") == 3
    assert value(after, hits, event="other", phone_type="yealink", outcome="accepted") == 1
    assert value(after, hits, event="incoming_call", phone_type="generic", outcome="accepted") == 1
    assert value(after, hits, event="off_hook", phone_type="yealink", outcome="400") == 1
    assert value(after, "amego_hit_duration_seconds_count") == 6
    assert value(after, "amego_hit_duration_seconds_sum") > 0
    assert value(after, "amego_refusals_total", status="404", reason="no_route") == 1
    assert value(after, "amego_refusals_total", status="400", reason="malformed") == 1
    assert value(after, "amego_mqtt_queue_length") >= 0

    # Published counts what the broker acknowledged: it catches up with what the watcher saw.
    def published() -> float:
        return value(scrape(running), "amego_mqtt_messages_published_total")

    wait_until(lambda: published() >= value(before, "amego_mqtt_messages_published_total") + 10)


def test_a_wrong_token_counts_as_a_refused_hit(
    mosquitto: Mosquitto, bridge_with: list[RunningBridge]
) -> None:
    config = make_config(unique_base(), mosquitto.url, {"http": {"token": "s3cret"}})
    rb = start(mosquitto, bridge_with, config)
    assert rb.hit(f"/offhook/snom?mac={MAC}&token=wrong").status_code == 403
    samples = scrape(rb)
    assert value(samples, "amego_hits_total", event="off_hook", phone_type="snom", outcome="403") == 1
    assert value(samples, "amego_refusals_total", status="403", reason="token") == 1
    assert "s3cret" not in rb.hit("/metrics").text


def test_metrics_keep_to_allowed_networks(mosquitto: Mosquitto, bridge_with: list[RunningBridge]) -> None:
    config = make_config(unique_base(), mosquitto.url, {"http": {"allowed_networks": ["10.0.0.0/8"]}})
    rb = start(mosquitto, bridge_with, config)
    response = rb.hit("/metrics")
    assert response.status_code == 403
    assert "amego_" not in response.text


def test_two_bridges_count_apart(
    running: RunningBridge, mosquitto: Mosquitto, bridge_with: list[RunningBridge]
) -> None:
    other = start(mosquitto, bridge_with, make_config(unique_base(), mosquitto.url))
    assert running.hit(f"/offhook/yealink?device={MAC}").status_code == 200
    labels = {"event": "off_hook", "phone_type": "yealink", "outcome": "accepted"}
    assert value(scrape(running), "amego_hits_total", **labels) == 1
    assert value(scrape(other), "amego_hits_total", **labels) == 0


def test_arp_lookups_and_phone_commands_have_counters() -> None:
    metrics = Metrics(lambda: None)
    metrics.count_arp_lookup("kernel")
    metrics.count_arp_lookup("kernel")
    metrics.count_arp_lookup("no_answer")
    metrics.count_phone_command("ok")
    text = metrics.render()[0].decode()
    assert 'amego_arp_lookups_total{method="kernel"} 2.0' in text
    assert 'amego_arp_lookups_total{method="no_answer"} 1.0' in text
    assert 'amego_phone_commands_total{result="ok"} 1.0' in text
    assert "amego_mqtt_connected 0.0" in text


def test_arp_lookups_and_phone_commands_are_counted(running: RunningBridge, watcher: Watcher) -> None:
    assert running.hit("/offhook/yealink?local=100").status_code == 200  # no MAC: the resolver is asked
    assert running.hit(f"/offhook/yealink?device={MAC}").status_code == 200
    watcher.client.publish(f"{running.base}/{MAC}/dial", "5551234", qos=1)  # no address known: an error
    watcher.wait_for(f"{running.base}/{MAC}/response", lambda p: p["status"] == "error")
    samples = scrape(running)
    assert value(samples, "amego_arp_lookups_total", method="disabled") == 1
    assert value(samples, "amego_phone_commands_total", result="error") == 1


def test_hits_and_their_durations_read_as_prometheus_clients_counter_and_histogram_give_them() -> None:
    """The bridge counts hits itself (`HitCollector`): the same series as prometheus_client's own
    Counter and Histogram fed the same hits, on every bucket's edge and past the last one."""
    ours = Metrics(lambda: None)
    theirs = CollectorRegistry()
    counter = Counter("amego_hits", "", ["event", "phone_type", "outcome"], registry=theirs)
    histogram = Histogram("amego_hit_duration_seconds", "", buckets=HIT_BUCKETS, registry=theirs)
    hits = [
        ("off_hook", "yealink", "accepted"),
        ("other", "snom", "403"),
        ("off_hook", "yealink", "accepted"),
    ]
    durations = [0.0, 0.0004, *HIT_BUCKETS, *(b * 1.01 for b in HIT_BUCKETS), 3.0, 60.0]
    for at, seconds in enumerate(durations):
        key = hits[at % len(hits)]
        ours.count_hit(*key, seconds)
        counter.labels(*key).inc()
        histogram.observe(seconds)

    def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith(("amego_hits", "amego_hit_duration")) and not s.name.endswith("_created")
        }

    mine = samples(ours.render()[0].decode())
    assert mine == samples(generate_latest(theirs).decode())
    assert len(mine) == 2 + len(HIT_BUCKETS) + 3  # two label sets; the buckets, +Inf, count, sum
    created = {s.name for f in text_string_to_metric_families(ours.render()[0].decode()) for s in f.samples}
    assert {"amego_hits_created", "amego_hit_duration_seconds_created"} <= created
