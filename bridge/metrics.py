"""Prometheus metrics of one bridge, in a registry of its own (tests run several bridges at once).

Every label value comes from a small fixed set: a value from a request never becomes a label
as it is, so no client can grow the registry without bound.
"""

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from bridge.mqtt import MqttLink

PREFIX = "amego"
# Hit handling is normally well under a millisecond; an active ARP request takes 15-30 ms, a
# timed-out one the full arp.timeout.
HIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Why requests are refused, by status; 403 is told apart by its reason.
REFUSAL_KINDS = {
    400: "malformed",
    404: "no_route",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    414: "url_too_long",
    429: "rate_limited",
    503: "queue_full",
}
STORE_REFUSAL = "cannot store the event"  # how the 503 of a store that cannot write begins
CALL_LOG_REFUSAL = "cannot read the call log"  # a store damaged again within the hour


def refusal_kind(status: int, reason: str) -> str:
    if status == 403:
        return "network" if "allowed_networks" in reason else "token"
    if status == 503 and reason.startswith((STORE_REFUSAL, CALL_LOG_REFUSAL)):
        return "storage"
    return REFUSAL_KINDS.get(status, f"http_{status}")


class LinkCollector(Collector):
    """The MQTT link's state, read when scraped."""

    def __init__(self, link: Callable[[], MqttLink | None]) -> None:
        self.link = link

    def collect(self) -> Iterable[Metric]:
        link = self.link()
        yield GaugeMetricFamily(
            f"{PREFIX}_mqtt_connected",
            "1 while the bridge is connected to its MQTT broker",
            value=1 if link is not None and link.connected else 0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_mqtt_queue_length",
            "MQTT messages waiting to be sent or acknowledged",
            value=link.queue_length if link is not None else 0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_mqtt_messages_published",
            "MQTT messages the broker acknowledged since start",
            value=link.published if link is not None else 0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_mqtt_messages_refused",
            "MQTT messages not sent again: refused by the broker (MQTT 5), or hung up on 3 times",
            value=link.refused if link is not None else 0,
        )


class HitCollector(Collector):
    """`amego_hits` and `amego_hit_duration_seconds`, counted in a dict and a list, read when
    scraped, with the series prometheus_client's Counter and Histogram would give them. Those
    take a lock for each value they change and walk the buckets in Python: 2.4 % of a hit's
    instructions, for what is done here with an addition and a `bisect`."""

    def __init__(self) -> None:
        # Bounded: events are canonical names or "other", phone types profiles, outcomes statuses.
        self.counts: dict[tuple[str, str, str], int] = {}
        self.created: dict[tuple[str, str, str], float] = {}
        self.buckets = [0] * (len(HIT_BUCKETS) + 1)  # not cumulative; the last one is +Inf's
        self.seconds = 0.0
        self.since = time.time()

    def count(self, key: tuple[str, str, str], seconds: float) -> None:
        counts = self.counts
        if key not in counts:
            counts[key] = 0
            self.created[key] = time.time()
        counts[key] += 1
        self.buckets[bisect_left(HIT_BUCKETS, seconds)] += 1  # the first bound >= seconds
        self.seconds += seconds

    def collect(self) -> Iterable[Metric]:
        hits = CounterMetricFamily(
            f"{PREFIX}_hits",
            "Action URL hits by event, phone type and outcome (accepted, or the HTTP status of the refusal)",
            labels=("event", "phone_type", "outcome"),
        )
        for key, value in self.counts.items():
            hits.add_metric(key, value, created=self.created[key])
        yield hits
        duration = HistogramMetricFamily(
            f"{PREFIX}_hit_duration_seconds", "Time from an Action URL request to its answer"
        )
        bounds = [*map(floatToGoString, HIT_BUCKETS), "+Inf"]
        duration.add_metric([], list(zip(bounds, accumulate(self.buckets), strict=True)), self.seconds)
        duration.add_sample(f"{PREFIX}_hit_duration_seconds_created", {}, self.since)
        yield duration


class Metrics:
    def __init__(self, link: Callable[[], MqttLink | None]) -> None:
        self.registry = CollectorRegistry()
        self.hits = HitCollector()
        self.registry.register(self.hits)
        self.refusals = Counter(
            f"{PREFIX}_refusals",
            "Refused HTTP requests by status and reason",
            ["status", "reason"],
            registry=self.registry,
        )
        self.arp_lookups = Counter(
            f"{PREFIX}_arp_lookups",
            "MAC lookups by how they were answered",
            ["method"],
            registry=self.registry,
        )
        self.phone_commands = Counter(
            f"{PREFIX}_phone_commands",
            "Dial requests and commands sent to phones, by result",
            ["result"],
            registry=self.registry,
        )
        self.registry.register(LinkCollector(link))

    def count_hit(self, event: str, phone_type: str, outcome: str, seconds: float) -> None:
        """`event` a canonical event name or "other"; `phone_type` a profile's name."""
        self.hits.count((event, phone_type, outcome), seconds)

    def count_refusal(self, status: int, reason: str) -> None:
        self.refusals.labels(str(status), refusal_kind(status, reason)).inc()

    def count_arp_lookup(self, method: str) -> None:
        """One MAC lookup; `method` one of arp.Method's values (kernel, arp_request, cache, ...)."""
        self.arp_lookups.labels(method).inc()

    def count_phone_command(self, result: str) -> None:
        """One dial or command sent to a phone; `result` a short fixed word ("ok", "error", ...)."""
        self.phone_commands.labels(result).inc()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition format a scraper's Accept header asks for (else text 0.0.4), and its type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
