"""Subcommands, logging set-up, and the only sys.exit."""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from bridge import __version__, payloads
from bridge.arp import MacResolver, fallback_id, normalise
from bridge.calls import CallRecord
from bridge.config import Config, ConfigError, find_config_path, load_config, split_host_port
from bridge.mqtt import Endpoint, broker_answers, parse_url
from bridge.profile_files import ProfileError, load_profiles
from bridge.profiles import BUILTIN_PROFILES, Profile

if TYPE_CHECKING:
    from bridge.broker import EmbeddedBroker

log = logging.getLogger("bridge")

EXIT_USAGE = 2
DEFAULT_BROKER = Endpoint("127.0.0.1", 1883)


class UsageError(Exception):
    """A problem the user must fix; one line, exit code 2."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """One line per message, whatever a request put in it (a path may hold a decoded newline)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).replace("\r", "\\r").replace("\n", "\\n")


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho and uvicorn are chatty; their warnings still show.
    logging.getLogger("uvicorn.error").setLevel(max(logging.INFO, root.level))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="amego-bridge",
        description="Desk IP phones' Action URLs to MQTT and Home Assistant.",
    )
    p.add_argument("--version", action="version", version=f"amego-bridge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help)
        cmd.add_argument(
            "--config", metavar="PATH", help="config file (else $AMEGO_CONFIG, else ./config.toml)"
        )
        return cmd

    run = add("run", "run the bridge: HTTP endpoint for the phones, MQTT out")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["text", "json"])
    add("check-config", "check the configuration; exit 0, or 2 with the problem")
    urls = add("urls", "print the Action URLs to paste into a phone of a type")
    urls.add_argument("phone_type", help=", ".join(sorted(BUILTIN_PROFILES)))
    urls.add_argument("--server", metavar="HOST:PORT", help="how the phone reaches the bridge")
    arp = add("arp", "print the MAC of an address and how it was found (exit 0), or why not (exit 1)")
    arp.add_argument("ip", help="a phone's IPv4 address")
    calls = add("calls", "print the call log, newest first")
    calls.add_argument("--device", metavar="ID", help="one phone (its id, or its MAC in any spelling)")
    calls.add_argument("--since", metavar="WHEN", help="ISO date or time (UTC), or an age: 30m, 12h, 7d")
    calls.add_argument("--limit", type=int, default=50, metavar="N", help="at most N calls (default 50)")
    calls.add_argument("--format", choices=["table", "csv", "json"], default="table")
    add_simulate(add("simulate", "simulated phones: the Action URL hits of realistic calls, for testing"))
    return p


def add_simulate(cmd: argparse.ArgumentParser) -> None:
    from bridge.sequences import Flavour, Scenario

    cmd.add_argument(
        "--server", metavar="HOST:PORT", help="the bridge (default: this host and the config's http.port)"
    )
    cmd.add_argument("--phones", type=int, default=1, metavar="N", help="number of phones (default 1)")
    cmd.add_argument(
        "--first-phone", type=int, default=0, metavar="K", help="number phones from K: other MACs (default 0)"
    )
    cmd.add_argument(
        "--rate", type=float, default=5.0, metavar="R", help="hits/s of all phones together; 0: flat out"
    )
    cmd.add_argument("--duration", type=float, metavar="S", help="stop sending after S seconds")
    cmd.add_argument(
        "--finish", action="store_true", help="with --duration: calls under way then play to their end"
    )
    cmd.add_argument(
        "--calls", type=int, metavar="N", help="play N scenarios, then stop (default 10 without --duration)"
    )
    cmd.add_argument("--seed", type=int, default=0, help="same seed, same phones and calls (default 0)")
    cmd.add_argument("--type", choices=[f.value for f in Flavour], default="mixed", help="phone type")
    cmd.add_argument(
        "--scenarios",
        metavar="LIST",
        help=f"comma-separated, of: {', '.join(s.value for s in Scenario)} (default: all)",
    )
    cmd.add_argument("--concurrency", type=int, metavar="N", help="most hits in flight (default: --phones)")
    cmd.add_argument("--token", help="http.token of the bridge (default: from the config)")
    cmd.add_argument("--timestamps", action="store_true", help="add t=<ns since the epoch> to each hit")
    cmd.add_argument("--json", action="store_true", help="print the summary as JSON")


def load(args: argparse.Namespace) -> Config:
    try:
        config, warnings = load_config(find_config_path(args.config, os.environ))
    except ConfigError as err:
        raise UsageError(str(err)) from err
    for warning in warnings:
        log.warning("%s", warning)
    profiles(config)  # a bad profile file stops every subcommand, like a bad config
    return config


def profiles(config: Config) -> Mapping[str, Profile]:
    try:
        return load_profiles(config.profiles.dir)
    except ProfileError as err:
        raise UsageError(str(err)) from err


def choose_broker(config: Config) -> "tuple[Endpoint, EmbeddedBroker | None]":
    """mqtt.url; else the broker on 127.0.0.1:1883 if one answers; else an embedded one (CONTRACT §5)."""
    url = config.mqtt.url
    if url and url != "embedded":
        return parse_url(url), None
    if not url and broker_answers(DEFAULT_BROKER.host, DEFAULT_BROKER.port):
        return DEFAULT_BROKER, None
    from bridge.broker import BrokerError, EmbeddedBroker

    host, port = split_host_port(config.mqtt.embedded_listen)
    embedded = EmbeddedBroker(host, port or DEFAULT_BROKER.port)
    try:
        embedded.check_address()
    except BrokerError as err:
        raise UsageError(str(err)) from err
    return embedded.endpoint, embedded


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args)
    setup_logging(args.log_level or config.log.level, args.log_format or config.log.format)
    import uvicorn

    from bridge.app import build_app
    from bridge.service import Bridge
    from bridge.store import StoreError
    from bridge.webui import Server

    endpoint, embedded = choose_broker(config)
    bridge = Bridge(config)
    app = build_app(bridge, bridge.broker_settings(endpoint), embedded)
    where = f"{config.http.host}:{config.http.port}"
    broker = embedded or endpoint
    log.info("amego-bridge %s: Action URLs on http://%s, MQTT broker %s", __version__, where, broker)
    if embedded is not None and not embedded.loopback_only:
        log.warning("the embedded MQTT broker takes anyone who reaches %s, with no password", broker)
    log.info("config: %s", config.path or "defaults (no config file)")
    try:  # before the server: a store it cannot use is one line, not uvicorn's trace of its start-up
        bridge.open()
    except StoreError as err:
        raise UsageError(str(err)) from err
    # uvicorn stops gracefully on SIGTERM or SIGINT, then raises the signal again for the handler
    # it found: make that a clean exit (0), not a death by signal or a KeyboardInterrupt trace.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, exit_cleanly)
    settings = uvicorn.Config(
        app,
        host=config.http.host,
        port=config.http.port,
        access_log=False,
        log_config=None,
        server_header=False,
        loop="auto",
        http=app.state.http_protocol,  # httptools, with a deadline for each request (bridge/httpserver.py)
        timeout_graceful_shutdown=3,
    )
    Server(settings, app.state.status_page).run()  # it ends open status pages' event streams first
    return 0


def exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load(args)
    print(f"{config.path or 'defaults (no config file)'}: OK")
    return 0


def cmd_urls(args: argparse.Namespace) -> int:
    config = load(args)
    known = profiles(config)
    profile = known.get(args.phone_type.lower())
    if profile is None:
        raise UsageError(f"unknown phone type {args.phone_type!r}; one of: {', '.join(sorted(known))}")
    server = args.server or server_address(config)
    token = f"&token={config.http.token}" if config.http.token else ""
    print(f"# {profile.vendor}: Action URLs for amego-bridge at {server}")
    for url in profile.event_urls:
        link = f"http://{server}/{url.event}/{profile.name}?{url.query}{token}"
        print(f"{url.setting}{profile.setting_separator}{link}")
    print_control_setup(profile, server)
    return 0


def print_control_setup(profile: Profile, server: str) -> None:
    """The phone-side settings that dialing and commands from MQTT need."""
    commands = profile.commands
    if not (commands.setup_lines or commands.setup_steps):
        return
    try:
        bridge_ip = split_host_port(server)[0]
    except ValueError:
        bridge_ip = server
    print(f"# Remote control (dial and commands from MQTT): settings on the {profile.vendor} phone")
    for line in commands.setup_lines:
        print(line.replace("{bridge_ip}", bridge_ip))
    for step in commands.setup_steps:
        print(f"# - {step.replace('{bridge_ip}', bridge_ip)}")


def cmd_arp(args: argparse.Namespace) -> int:
    try:
        address = str(normalise(args.ip))
    except ValueError as err:
        raise UsageError(f"{args.ip!r} is not an IP address") from err
    config = load(args)
    resolver = MacResolver(config.arp.enabled, config.arp.timeout)
    resolver.start(announce=False)  # the answer itself says no_permission
    found = asyncio.run(resolver.lookup(address))
    print(found.describe())
    if found.mac:
        print(f"device id: {found.mac}")
        return 0
    print(f"device id of its hits without device=$mac: {fallback_id(address)}")
    return 1


def parse_since(text: str | None, now: datetime) -> datetime | None:
    if not text:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[:-1].isdigit() and text[-1:] in units:
        return now - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError as err:
        raise UsageError(f"--since {text!r}: an ISO date or time, or an age like 7d") from err
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_calls(args: argparse.Namespace) -> int:
    from bridge.config import normalise_device_id
    from bridge.store import FILE_NAME, CallQuery, Store, StoreError
    from bridge.webviews import calls_csv

    config = load(args)
    if not 1 <= args.limit <= 100_000:
        raise UsageError("--limit: from 1 to 100000")
    directory = Path(config.storage.dir)
    if not (directory / FILE_NAME).exists():
        raise UsageError(f"no call log in {directory} (storage.dir): has the bridge run here?")
    device = None
    if args.device:
        device = normalise_device_id(args.device)
        if device is None:
            raise UsageError(f"--device {args.device!r} is not a device id or a MAC")
    try:
        store = Store.reader(directory)
    except StoreError as err:  # not a database, or one from a newer bridge: one line, not a trace
        raise UsageError(str(err)) from err
    try:
        query = CallQuery(device=device, since=parse_since(args.since, datetime.now(UTC)), limit=args.limit)
        records = store.calls(query)
        names = {stored.id: stored.name or stored.id for stored, _ in store.devices(history_size=0)}
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps(payloads.history(records), indent=2, ensure_ascii=False))
    elif args.format == "csv":
        sys.stdout.write(calls_csv(records, names))
    else:
        print_table(records, names)
    return 0


def print_table(records: Sequence[CallRecord], names: Mapping[str, str]) -> None:
    rows = [("ended (UTC)", "phone", "direction", "number", "name", "result", "ring s", "talk s")]
    for rec in records:
        rows.append(
            (
                rec.ended.strftime("%Y-%m-%d %H:%M:%S"),
                names.get(rec.device, rec.device),
                rec.direction.value if rec.direction else "-",
                rec.number or "-",
                rec.name or "-",
                rec.result.value,
                f"{rec.ring_seconds:.0f}",
                f"{rec.talk_seconds:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if len(rows) == 1:
        print("(no calls)")


def cmd_simulate(args: argparse.Namespace) -> int:
    from bridge.sequences import Flavour, Scenario
    from bridge.simulate import Options, simulate

    config = load(args)
    try:
        host, port = split_host_port(args.server) if args.server else (config.http.host, None)
    except ValueError as err:
        raise UsageError(f"--server {args.server!r} is not HOST:PORT") from err
    names = [name.strip() for name in (args.scenarios or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in set(Scenario)]
    if unknown:
        raise UsageError(f"unknown scenario {unknown[0]!r}; one of: {', '.join(Scenario)}")
    scenarios = tuple(Scenario(name) for name in names)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if args.phones < 1 or (args.concurrency is not None and args.concurrency < 1):
        raise UsageError("--phones and --concurrency must be at least 1")
    if not 0 <= args.first_phone < 2**24 - args.phones:
        raise UsageError("--first-phone must be from 0 to 16,777,215 less --phones")
    if args.rate < 0 or (args.calls or 0) < 0 or (args.duration or 0) < 0:
        raise UsageError("--rate, --calls and --duration must not be negative")
    options = Options(
        host=host,
        port=port or config.http.port,
        phones=args.phones,
        rate=args.rate,
        duration=args.duration,
        finish=args.finish,
        calls=args.calls if args.calls is not None or args.duration is not None else 10,
        seed=args.seed,
        flavour=Flavour(args.type),
        scenarios=scenarios or tuple(Scenario),
        token=args.token if args.token is not None else config.http.token,
        timestamps=args.timestamps,
        concurrency=args.concurrency,
        first_phone=args.first_phone,
    )
    if not args.json:
        where = f"{options.host}:{options.port}"
        print(f"{options.phones} {options.flavour} phone(s) -> http://{where} at {options.rate:g} hits/s")
    summary = simulate(options)
    print(json.dumps(summary.as_dict()) if args.json else summary.describe())
    return 0 if summary.hits and summary.statuses.get("200", 0) == summary.hits else 1


def server_address(config: Config) -> str:
    from bridge.service import http_url

    return http_url(config.http).split("://", 1)[1]


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return EXIT_USAGE
    if not logging.getLogger().handlers:
        setup_logging("info", "text")
    commands = {"run": cmd_run, "check-config": cmd_check_config, "urls": cmd_urls, "arp": cmd_arp}
    commands["simulate"] = cmd_simulate
    commands["calls"] = cmd_calls
    try:
        return commands[args.command](args)
    except UsageError as err:
        print(f"amego-bridge: {err}", file=sys.stderr)
        return EXIT_USAGE
