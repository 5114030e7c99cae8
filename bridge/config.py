"""Configuration: a TOML file, then `AMEGO_<SECTION>_<KEY>` environment overrides, as frozen dataclasses.

Every key has a default. A bad value raises ConfigError naming the dotted key; an unknown key is a warning.
"""

import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from bridge.profile_files import profile_names
from bridge.profiles import BUILTIN_PHONE_TYPES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Network = IPv4Network | IPv6Network
T = TypeVar("T", bound="DataclassInstance")

DEFAULT_NETWORKS: tuple[Network, ...] = tuple(
    ip_network(cidr)
    for cidr in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                 "fc00::/7", "fe80::/10")
)  # fmt: skip


class ConfigError(Exception):
    def __init__(self, key: str, problem: str, source: str = "") -> None:
        self.key = key  # dotted: "http.port", "devices.001565aabbcc.phone_type"
        self.problem = " ".join(problem.splitlines())
        self.source = source  # the environment variable the value came from, if any
        label = f"{source} ({key})" if source else key
        super().__init__(f"{label}: {self.problem}" if label else self.problem)


def secret() -> str:  # never in repr; "***" in public_dict()
    return field(default="", repr=False, metadata={"redact": "secret"})


def secret_file() -> str:  # a path, shown in repr, but "***" in public_dict()
    return field(default="", metadata={"redact": "secret"})


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    public_url: str = ""
    allowed_networks: tuple[Network, ...] = DEFAULT_NETWORKS
    token: str = secret()
    token_file: str = secret_file()
    rate_limit: float = 0.0
    ui_password: str = secret()
    ui_password_file: str = secret_file()


@dataclass(frozen=True, slots=True)
class MqttConfig:
    url: str = field(default="", repr=False, metadata={"redact": "url"})  # may hold a password
    embedded_listen: str = "127.0.0.1:1883"
    base_topic: str = "amego"
    qos: int = 1
    client_id: str = ""
    username: str = ""
    password: str = secret()
    password_file: str = secret_file()
    queue_size: int = 10000
    keepalive: int = 60


@dataclass(frozen=True, slots=True)
class HomeAssistantConfig:
    enabled: bool = True
    discovery_prefix: str = "homeassistant"
    retain: bool = True


@dataclass(frozen=True, slots=True)
class ArpConfig:
    enabled: bool = True
    timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class CallsConfig:
    history_size: int = 20
    ring_timeout: float = 180.0
    stale_timeout: float = 14400.0
    keep_days: int = 365


@dataclass(frozen=True, slots=True)
class StorageConfig:
    dir: str = "./amego-data"


@dataclass(frozen=True, slots=True)
class ContactsConfig:
    file: str = ""
    country_code: str = ""


@dataclass(frozen=True, slots=True)
class PollConfig:
    interval: float = 60.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "text"


@dataclass(frozen=True, slots=True)
class ProfilesConfig:
    dir: str = ""


@dataclass(frozen=True, slots=True)
class ControlConfig:
    timeout: float = 5.0
    queue_size: int = 16
    username: str = ""
    password: str = secret()
    password_file: str = secret_file()


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    id: str
    name: str = ""
    phone_type: str = ""
    ip: str = ""
    username: str = ""
    password: str = secret()
    password_file: str = secret_file()
    line: str = ""
    verify_tls: bool = True
    tls: bool = False
    auth: str = "auto"


@dataclass(frozen=True, slots=True)
class DevicesConfig:
    learn: bool = True
    offline_after: float = 90000.0
    phones: tuple[DeviceConfig, ...] = ()

    def get(self, device_id: str) -> DeviceConfig | None:
        wanted = normalise_device_id(device_id) or device_id
        return next((phone for phone in self.phones if phone.id == wanted), None)


@dataclass(frozen=True, slots=True)
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    arp: ArpConfig = field(default_factory=ArpConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    contacts: ContactsConfig = field(default_factory=ContactsConfig)
    poll: PollConfig = field(default_factory=PollConfig)
    log: LogConfig = field(default_factory=LogConfig)
    profiles: ProfilesConfig = field(default_factory=ProfilesConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    path: Path | None = None  # the file it came from

    def public_dict(self) -> dict[str, object]:
        """The whole config as JSON-able values, secrets replaced by "***" (for `bridge/info`)."""
        return public(self)


SECTIONS: "dict[str, DataclassInstance]" = {
    f.name: getattr(Config(), f.name) for f in fields(Config) if f.name != "path"
}
NOT_KEYS = {"id", "phones"}  # fields that are not TOML keys


def keys(default: "DataclassInstance") -> list[str]:
    return [f.name for f in fields(default) if f.name not in NOT_KEYS]


def public(obj: "DataclassInstance") -> dict[str, object]:
    out: dict[str, object] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("redact") == "secret" and value:
            value = "***"
        elif f.metadata.get("redact") == "url":
            value = redact_url(value)
        out[f.name] = plain(value)
    return out


def plain(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        return public(value)
    if isinstance(value, tuple):
        return [plain(item) for item in value]
    if isinstance(value, IPv4Network | IPv6Network | Path):
        return str(value)
    return value


def redact_url(url: str) -> str:
    """The URL with the password in it, if any, replaced by "***"."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostport = rest.rpartition("@")
    if not (sep and at and ":" in userinfo):
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{hostport}"


DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def normalise_device_id(raw: str) -> str | None:
    """A MAC in any spelling as 12 lowercase hex digits, another valid id as it is; None when invalid."""
    digits = re.sub(r"[:\-.]", "", raw.strip().lower())
    if re.fullmatch(r"[0-9a-f]{12}", digits):
        return digits
    return raw if DEVICE_ID.fullmatch(raw) else None


def split_host_port(value: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address; ValueError otherwise."""
    port: str | None
    if bracketed := re.fullmatch(r"\[([^\]]+)\](?::([0-9]+))?", value):
        host, port = bracketed[1], bracketed[2]
        ip_address(host)
    elif value.count(":") > 1:
        host, port = value, None
        ip_address(host)
    else:
        host, colon, port = value.partition(":")
        port = port if colon else None
        if not re.fullmatch(r"[A-Za-z0-9._-]+", host):
            raise ValueError(host)
    if port is None:
        return host, None
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ValueError(port)
    return host, int(port)


# Checks run on values of the right type; they return the value to keep or raise ValueError(problem).
def number(low: float, high: float = math.inf, above: bool = False) -> Callable[[float], float]:
    def check(value: float) -> float:
        if above and value <= low:
            raise ValueError(f"must be greater than {low} (got {value})")
        if value < low or value > high:
            limits = f"at least {low}" if high == math.inf else f"between {low} and {high}"
            raise ValueError(f"must be {limits} (got {value})")
        return value

    return check


def one_of(*options: str | int) -> Callable[[str | int], str | int]:
    text = ", ".join(map(str, options[:-1])) + f" or {options[-1]}"

    def check(value: str | int) -> str | int:
        found = value.lower() if isinstance(value, str) else value
        if found not in options:
            raise ValueError(f"must be {text} (got {value!r})")
        return found

    return check


def matches(pattern: str, shape: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"must be {shape} (got {value!r})")
        return value

    return check


LEVEL = r"[^/+#\x00-\x1f\x7f]+"
TOPIC = matches(f"{LEVEL}(/{LEVEL})*", "topic levels joined by '/', without '+', '#' or an empty level")


def networks(value: list[str]) -> tuple[Network, ...]:
    result = []
    for item in value:
        try:
            result.append(ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (CIDR)") from None
    return tuple(result)


def address(port_required: bool) -> Callable[[str], str]:
    shape = "host:port" if port_required else "empty, host or host:port"

    def check(value: str) -> str:
        if not value and not port_required:
            return value
        try:
            port = split_host_port(value)[1]
        except ValueError:
            port = 0
        if port == 0 or (port_required and port is None):
            raise ValueError(f"must be {shape}, with a port between 1 and 65535 (got {value!r})")
        return value

    return check


def mqtt_url(value: str) -> str:
    if value in ("", "embedded"):
        return value
    shape = "empty, 'embedded', mqtt://[user:pass@]host[:port] or mqtts://..."
    problem = f"must be {shape} (got {redact_url(value)!r})"
    try:
        parts = urlsplit(value)
        port = parts.port  # ValueError when not a number or out of range
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or port == 0:
        raise ValueError(problem)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(problem)
    return value


def phone_type(value: str) -> str:
    # Whether the type exists is checked once profiles.dir is known (parse_config).
    if value and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", value.lower()):
        raise ValueError(f"unknown phone type {value!r} (a phone type is a-z, 0-9, '_', '-')")
    return value.lower()


def directory(value: str) -> str:
    if value and not Path(value).is_dir():
        raise ValueError(f"no such directory {value!r}")
    return value


CHECKS: dict[str, Callable[[Any], object]] = {
    "http.port": number(1, 65535),
    "http.public_url": matches(r"(https?://.+)?", "empty or start with http:// or https://"),
    "http.allowed_networks": networks,
    "http.rate_limit": number(0),
    "mqtt.url": mqtt_url,
    "mqtt.embedded_listen": address(port_required=True),
    "mqtt.base_topic": TOPIC,
    "mqtt.qos": one_of(0, 1, 2),
    "mqtt.queue_size": number(1),
    "mqtt.keepalive": number(5, 3600),
    "homeassistant.discovery_prefix": TOPIC,
    "arp.timeout": number(0, above=True),
    "calls.history_size": number(1, 1000),
    "calls.ring_timeout": number(0, above=True),
    "calls.stale_timeout": number(0, above=True),
    "calls.keep_days": number(1),
    "contacts.country_code": matches(r"(\+[1-9][0-9]{0,3})?", "empty or a country code like '+49'"),
    "poll.interval": number(0),
    "log.level": one_of("debug", "info", "warning", "error"),
    "log.format": one_of("text", "json"),
    "devices.offline_after": number(0),
    "device.phone_type": phone_type,
    "device.auth": one_of("auto", "basic", "digest"),
    "profiles.dir": directory,
    "control.timeout": number(0, 120, above=True),
    "control.queue_size": number(1, 1000),
    "device.ip": address(port_required=False),
}

TOML_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}


def type_name(value: object) -> str:
    return TOML_TYPES.get(type(value), type(value).__name__)


def coerce(value: object, default: object) -> object:
    """The value, checked to have the type of the key's default (an integer is accepted as a float)."""
    want = "array" if isinstance(default, tuple) else type_name(default)
    if want == "float" and type(value) is int:
        return float(value)
    if type_name(value) != want:
        raise ValueError(f"wrong type: expected {want}, got {type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number (got {value})")
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        raise ValueError("wrong type: expected an array of strings")
    return value


TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def from_env(text: str, default: object) -> object:
    """An environment variable's text as a value of the key's type, for coerce() and the checks."""
    word = text.strip()
    try:
        if isinstance(default, bool):
            if word.lower() not in TRUE | FALSE:
                raise ValueError
            return word.lower() in TRUE
        if isinstance(default, int):
            return int(word)
        if isinstance(default, float):
            return float(word)
    except ValueError:
        raise ValueError(f"wrong type: expected {type_name(default)}, got {text!r}") from None
    if isinstance(default, tuple):
        if not word.startswith("["):
            return [item.strip() for item in word.split(",") if item.strip()]
        try:
            return json.loads(word)
        except ValueError:
            raise ValueError(f"not a JSON array: {text!r}") from None
    return text


def read_secret(path: str) -> str:
    text = Path(path).read_text(encoding="utf-8")
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def reason(err: OSError | UnicodeDecodeError) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


class Reader:
    def __init__(self) -> None:
        self.sources: dict[str, str] = {}  # dotted key -> environment variable that set it
        self.warnings: list[str] = []

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(key, problem, self.sources.get(key, ""))

    def table(self, key: str, value: object) -> Mapping[str, object]:
        if not isinstance(value, Mapping):
            raise self.error(key, f"wrong type: expected table, got {type_name(value)}")
        return value

    def apply_env(self, data: Mapping[str, object], env: Mapping[str, str]) -> dict[str, object]:
        merged = dict(data)
        for var in sorted(env):
            if not var.startswith("AMEGO_") or var == "AMEGO_CONFIG":
                continue
            section, _, name = var.removeprefix("AMEGO_").lower().partition("_")
            if section not in SECTIONS or name not in keys(SECTIONS[section]):
                self.warnings.append(f"unknown environment variable {var} (ignored)")
                continue
            key = f"{section}.{name}"
            try:
                value = from_env(env[var], getattr(SECTIONS[section], name))
            except ValueError as err:
                raise ConfigError(key, str(err), var) from err
            table = merged.get(section, {})
            if isinstance(table, Mapping):  # otherwise section() reports the file's wrong type
                merged[section] = {**table, name: value}
            self.sources[key] = var
        return merged

    def section(self, prefix: str, default: T, table: Mapping[str, object], schema: str = "") -> T:
        known = keys(default)
        changes: dict[str, object] = {}
        for name, raw in table.items():
            key = f"{prefix}.{name}"
            if name not in known:
                self.warnings.append(f"unknown key '{key}' (ignored)")
                continue
            try:
                value = coerce(raw, getattr(default, name))
                check = CHECKS.get(f"{schema or prefix}.{name}")
                changes[name] = value if check is None else check(value)
            except ValueError as err:
                raise self.error(key, str(err)) from err
        for name in known:
            secret_name, file_key = name.removesuffix("_file"), f"{prefix}.{name}"
            if name == secret_name or not changes.get(name):
                continue
            if changes.get(secret_name):
                self.warnings.append(f"both '{prefix}.{secret_name}' and '{file_key}' are set; the file wins")
            try:
                changes[secret_name] = read_secret(str(changes[name]))
            except (OSError, UnicodeDecodeError) as err:
                raise self.error(file_key, f"cannot read {changes[name]!r}: {reason(err)}") from err
        return replace(default, **changes)

    def devices(self, table: Mapping[str, object]) -> DevicesConfig:
        settings = {name: value for name, value in table.items() if not isinstance(value, Mapping)}
        phones: dict[str, DeviceConfig] = {}
        for raw_id, value in table.items():
            if not isinstance(value, Mapping):
                continue
            device_id = normalise_device_id(raw_id)
            if device_id is None:
                problem = f"{raw_id!r} is not a MAC address or a device id (a-z, 0-9, '_', '-'; up to 64)"
                raise self.error(f"devices.{raw_id}", problem)
            if device_id in phones:
                raise self.error(f"devices.{raw_id}", f"device {device_id} is defined twice")
            phones[device_id] = self.section(f"devices.{device_id}", DeviceConfig(device_id), value, "device")
        return replace(self.section("devices", DevicesConfig(), settings), phones=tuple(phones.values()))


def parse_config(
    data: Mapping[str, object], env: Mapping[str, str], path: Path | None = None
) -> tuple[Config, list[str]]:
    """A Config from parsed TOML and the environment; returns it with the warnings to log."""
    reader = Reader()
    merged = reader.apply_env(data, env)
    reader.warnings += [f"unknown section '{name}' (ignored)" for name in merged if name not in SECTIONS]
    sections: dict[str, Any] = {
        name: reader.section(name, default, reader.table(name, merged.get(name, {})))
        for name, default in SECTIONS.items()
        if name != "devices"
    }
    devices = reader.devices(reader.table("devices", merged.get("devices", {})))
    known = BUILTIN_PHONE_TYPES | profile_names(sections["profiles"].dir)
    for phone in devices.phones:
        if phone.phone_type and phone.phone_type not in known:
            problem = f"unknown phone type {phone.phone_type!r} (known: {', '.join(sorted(known))})"
            raise ConfigError(f"devices.{phone.id}.phone_type", problem)
    return replace(Config(path=path), devices=devices, **sections), reader.warnings


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> tuple[Config, list[str]]:
    """The config in the file at path (defaults when None) with the environment's overrides, and warnings."""
    data: dict[str, object] = {}
    if path is not None:
        try:
            with path.open("rb") as file:
                data = tomllib.load(file)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(str(path), str(err)) from err
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError("config", f"cannot read {str(path)!r}: {reason(err)}") from err
    return parse_config(data, os.environ if env is None else env, path)


def find_config_path(arg: str | None, env: Mapping[str, str]) -> Path | None:
    """--config, else $AMEGO_CONFIG, else ./config.toml when it exists, else None (run with defaults)."""
    for source, value in (("--config", arg), ("AMEGO_CONFIG", env.get("AMEGO_CONFIG"))):
        if value:
            if not Path(value).exists():
                raise ConfigError("config", f"no such file {value!r} (from {source})")
            return Path(value)
    default = Path("config.toml")
    return default if default.is_file() else None
