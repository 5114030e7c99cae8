"""Subcommands, logging set-up, and the only sys.exit."""

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from bridge import __version__
from bridge.config import Config, ConfigError, find_config_path, load_config
from bridge.mqtt import Endpoint, broker_answers, parse_url
from bridge.profiles import BUILTIN_PROFILES

log = logging.getLogger("bridge")

EXIT_USAGE = 2
DEFAULT_BROKER = Endpoint("127.0.0.1", 1883)
NOT_YET = {
    "calls": "the call log command",
    "arp": "the ARP lookup command",
    "simulate": "the phone simulator",
}


class UsageError(Exception):
    """A problem the user must fix; one line, exit code 2."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
    for name, what in NOT_YET.items():
        add(name, f"{what} (not built yet)").add_argument("args", nargs="*")
    return p


def load(args: argparse.Namespace) -> Config:
    try:
        config, warnings = load_config(find_config_path(args.config, os.environ))
    except ConfigError as err:
        raise UsageError(str(err)) from err
    for warning in warnings:
        log.warning("%s", warning)
    return config


def choose_broker(config: Config) -> Endpoint:
    url = config.mqtt.url
    if url == "embedded":
        raise UsageError(
            "mqtt.url = 'embedded': the embedded broker is not built yet; start mosquitto instead"
        )
    if url:
        return parse_url(url)
    if broker_answers(DEFAULT_BROKER.host, DEFAULT_BROKER.port):
        return DEFAULT_BROKER
    raise UsageError(
        "no MQTT broker answers on 127.0.0.1:1883: start one (apt-get install mosquitto, or "
        "docker run -p 1883:1883 eclipse-mosquitto) or set mqtt.url in the config"
    )


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args)
    setup_logging(args.log_level or config.log.level, args.log_format or config.log.format)
    import uvicorn

    from bridge.app import build_app
    from bridge.service import Bridge

    endpoint = choose_broker(config)
    bridge = Bridge(config)
    app = build_app(bridge, bridge.broker_settings(endpoint))
    where = f"{config.http.host}:{config.http.port}"
    log.info("amego-bridge %s: Action URLs on http://%s, MQTT broker %s", __version__, where, endpoint)
    log.info("config: %s", config.path or "defaults (no config file)")
    uvicorn.run(
        app,
        host=config.http.host,
        port=config.http.port,
        access_log=False,
        log_config=None,
        server_header=False,
        loop="auto",
        http="auto",
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load(args)
    print(f"{config.path or 'defaults (no config file)'}: OK")
    return 0


def cmd_urls(args: argparse.Namespace) -> int:
    config = load(args)
    profile = BUILTIN_PROFILES.get(args.phone_type.lower())
    if profile is None:
        raise UsageError(
            f"unknown phone type {args.phone_type!r}; one of: {', '.join(sorted(BUILTIN_PROFILES))}"
        )
    server = args.server or server_address(config)
    token = f"&token={config.http.token}" if config.http.token else ""
    print(f"# {profile.vendor}: Action URLs for amego-bridge at {server}")
    for url in profile.event_urls:
        print(f"{url.setting} = http://{server}/{url.event}/{profile.name}?{url.query}{token}")
    return 0


def server_address(config: Config) -> str:
    if config.http.public_url:
        return config.http.public_url.split("://", 1)[1].rstrip("/")
    host = config.http.host
    if host in ("0.0.0.0", "::", ""):
        import socket

        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"{host}:{config.http.port}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return EXIT_USAGE
    if args.command in NOT_YET:
        print(f"amego-bridge {args.command}: {NOT_YET[args.command]} is not built yet", file=sys.stderr)
        return EXIT_USAGE
    if not logging.getLogger().handlers:
        setup_logging("info", "text")
    commands = {"run": cmd_run, "check-config": cmd_check_config, "urls": cmd_urls}
    try:
        return commands[args.command](args)
    except UsageError as err:
        print(f"amego-bridge: {err}", file=sys.stderr)
        return EXIT_USAGE
