import json
from collections.abc import Callable
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import pytest

from bridge.config import Config, ConfigError, find_config_path, load_config, parse_config

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def parse(data: dict[str, object], env: dict[str, str] | None = None) -> Config:
    config, warnings = parse_config(data, env or {})
    assert warnings == []
    return config


def test_example_file_loads_as_the_defaults() -> None:
    config, warnings = load_config(EXAMPLE, {})
    assert warnings == []
    assert config.path == EXAMPLE
    assert replace(config, path=None) == Config()
    assert parse({}) == Config()


def test_no_file_means_defaults() -> None:
    assert load_config(None, {}) == (Config(), [])


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"http": {"port": 70000}}, "http.port", "http.port: must be between 1 and 65535 (got 70000)"),
        ({"http": {"port": "8080"}}, "http.port", "http.port: wrong type: expected integer, got string"),
        ({"http": {"port": True}}, "http.port", "http.port: wrong type: expected integer, got boolean"),
        ({"mqtt": {"qos": 7}}, "mqtt.qos", "mqtt.qos: must be 0, 1 or 2 (got 7)"),
        (
            {"http": {"allowed_networks": ["10.0.0.0/8", "10.0.0/33"]}},
            "http.allowed_networks",
            "http.allowed_networks: '10.0.0/33' is not a network (CIDR)",
        ),
        ({"http": {"allowed_networks": "10.0.0.0/8"}}, "http.allowed_networks", "wrong type"),
        ({"http": {"public_url": "bridge:8080"}}, "http.public_url", "http://"),
        ({"http": {"rate_limit": -1}}, "http.rate_limit", "must be at least 0 (got -1.0)"),
        ({"http": 5}, "http", "http: wrong type: expected table, got integer"),
        ({"mqtt": {"base_topic": "amego/#"}}, "mqtt.base_topic", "'#'"),
        ({"mqtt": {"base_topic": "amego/"}}, "mqtt.base_topic", "mqtt.base_topic: must be"),
        ({"mqtt": {"base_topic": "a//b"}}, "mqtt.base_topic", "mqtt.base_topic: must be"),
        ({"mqtt": {"base_topic": ""}}, "mqtt.base_topic", "mqtt.base_topic: must be"),
        ({"homeassistant": {"discovery_prefix": "+"}}, "homeassistant.discovery_prefix", "'+'"),
        ({"mqtt": {"url": "http://broker:1883"}}, "mqtt.url", "mqtt.url: must be empty, 'embedded'"),
        ({"mqtt": {"url": "mqtt://broker:99999"}}, "mqtt.url", "mqtt.url: must be"),
        ({"mqtt": {"url": "mqtt://"}}, "mqtt.url", "mqtt.url: must be"),
        ({"mqtt": {"embedded_listen": "127.0.0.1"}}, "mqtt.embedded_listen", "host:port"),
        ({"mqtt": {"keepalive": 1}}, "mqtt.keepalive", "must be between 5 and 3600 (got 1)"),
        ({"mqtt": {"queue_size": 0}}, "mqtt.queue_size", "must be at least 1 (got 0)"),
        ({"arp": {"timeout": 0}}, "arp.timeout", "arp.timeout: must be greater than 0 (got 0.0)"),
        ({"calls": {"history_size": 1001}}, "calls.history_size", "between 1 and 1000"),
        ({"calls": {"ring_timeout": "3m"}}, "calls.ring_timeout", "wrong type: expected float, got string"),
        ({"contacts": {"country_code": "49"}}, "contacts.country_code", "'+49'"),
        ({"poll": {"interval": float("nan")}}, "poll.interval", "finite"),
        ({"log": {"level": "verbose"}}, "log.level", "log.level: must be debug, info, warning or error"),
        ({"log": {"format": "xml"}}, "log.format", "must be text or json"),
        ({"devices": {"learn": "yes"}}, "devices.learn", "wrong type: expected boolean, got string"),
        (
            {"devices": {"001565aabbcc": {"phone_type": "nokia"}}},
            "devices.001565aabbcc.phone_type",
            "unknown phone type 'nokia'",
        ),
        ({"devices": {"Front Desk": {}}}, "devices.Front Desk", "not a MAC address or a device id"),
        ({"devices": {"lobby": {"ip": "10.0.0.5:0"}}}, "devices.lobby.ip", "host or host:port"),
        ({"devices": {"lobby": {"verify_tls": 1}}}, "devices.lobby.verify_tls", "expected boolean"),
        (
            {"devices": {"00:15:65:AA:BB:CC": {}, "001565aabbcc": {}}},
            "devices.001565aabbcc",
            "defined twice",
        ),
    ],
)
def test_bad_value_is_one_line_naming_the_key(data: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, {})
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[http]\nport = 80 80\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.key == str(path)
    assert "line 2" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.toml", {})
    assert caught.value.key == "config"


@pytest.mark.parametrize(
    ("data", "env", "warning"),
    [
        ({"http": {"prot": 8081}}, {}, "unknown key 'http.prot' (ignored)"),
        ({"htp": {"port": 8081}}, {}, "unknown section 'htp' (ignored)"),
        ({"devices": {"lern": False}}, {}, "unknown key 'devices.lern' (ignored)"),
        ({"devices": {"lobby": {"nmae": "x"}}}, {}, "unknown key 'devices.lobby.nmae' (ignored)"),
        ({}, {"AMEGO_HTTP_PROT": "1"}, "unknown environment variable AMEGO_HTTP_PROT (ignored)"),
        ({}, {"AMEGO_DEVICES_X_IP": "x"}, "unknown environment variable AMEGO_DEVICES_X_IP (ignored)"),
    ],
)
def test_unknown_names_are_warnings(data: dict[str, object], env: dict[str, str], warning: str) -> None:
    config, warnings = parse_config(data, env)
    assert warnings == [warning]
    assert replace(config, devices=replace(config.devices, phones=())) == Config()


def test_config_variable_and_other_variables_are_not_overrides() -> None:
    assert parse_config({}, {"AMEGO_CONFIG": "/etc/amego.toml", "HOME": "/root"}) == (Config(), [])


@pytest.mark.parametrize(
    ("var", "value", "get", "expected"),
    [
        ("AMEGO_HTTP_PORT", "8081", lambda c: c.http.port, 8081),
        ("AMEGO_HTTP_RATE_LIMIT", "2.5", lambda c: c.http.rate_limit, 2.5),
        ("AMEGO_HOMEASSISTANT_ENABLED", "off", lambda c: c.homeassistant.enabled, False),
        ("AMEGO_DEVICES_LEARN", "No", lambda c: c.devices.learn, False),
        ("AMEGO_ARP_ENABLED", "1", lambda c: c.arp.enabled, True),
        ("AMEGO_MQTT_URL", "mqtt://broker:1884", lambda c: c.mqtt.url, "mqtt://broker:1884"),
        ("AMEGO_LOG_LEVEL", "DEBUG", lambda c: c.log.level, "debug"),
        (
            "AMEGO_HTTP_ALLOWED_NETWORKS",
            "10.0.0.0/8, 192.168.1.7",
            lambda c: c.http.allowed_networks,
            (ip_network("10.0.0.0/8"), ip_network("192.168.1.7/32")),
        ),
        (
            "AMEGO_HTTP_ALLOWED_NETWORKS",
            '["::1/128"]',
            lambda c: c.http.allowed_networks,
            (ip_network("::1/128"),),
        ),
    ],
)
def test_environment_overrides_the_file(
    var: str, value: str, get: Callable[[Config], object], expected: object
) -> None:
    data: dict[str, object] = {"http": {"port": 9000}, "mqtt": {"url": "embedded"}, "log": {"level": "error"}}
    assert get(parse(data, {var: value})) == expected


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("AMEGO_HTTP_PORT", "x80", "AMEGO_HTTP_PORT (http.port): wrong type: expected integer, got 'x80'"),
        ("AMEGO_HTTP_PORT", "0", "AMEGO_HTTP_PORT (http.port): must be between 1 and 65535 (got 0)"),
        ("AMEGO_DEVICES_LEARN", "maybe", "AMEGO_DEVICES_LEARN (devices.learn): wrong type"),
        ("AMEGO_HTTP_ALLOWED_NETWORKS", "[1, 2]", "AMEGO_HTTP_ALLOWED_NETWORKS (http.allowed_networks): "),
        ("AMEGO_MQTT_QOS", "3", "AMEGO_MQTT_QOS (mqtt.qos): must be 0, 1 or 2 (got 3)"),
    ],
)
def test_bad_environment_value_names_the_variable(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({}, {var: value})
    assert str(caught.value).startswith(message)
    assert caught.value.source == var
    assert "\n" not in str(caught.value)


def test_secrets_are_read_from_files(tmp_path: Path) -> None:
    def secret(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        return str(tmp_path / name)

    data: dict[str, object] = {
        "http": {"token_file": secret("token", "t0ken\n"), "ui_password_file": secret("ui", "ui pass\n\n")},
        "devices": {"lobby": {"password_file": secret("lobby", "ph0ne\r\n")}},
    }
    config = parse(data, {"AMEGO_MQTT_PASSWORD_FILE": secret("mqtt", "br0ker")})
    assert config.http.token == "t0ken"
    assert config.http.ui_password == "ui pass\n"  # only one trailing newline is stripped
    assert config.mqtt.password == "br0ker"
    phone = config.devices.get("lobby")
    assert phone is not None
    assert phone.password == "ph0ne"


@pytest.mark.parametrize(
    ("data", "env", "key"),
    [
        ({"http": {"token_file": "/nonexistent/token"}}, {}, "http.token_file"),
        ({}, {"AMEGO_MQTT_PASSWORD_FILE": "/nonexistent/mqtt"}, "mqtt.password_file"),
        ({"devices": {"lobby": {"password_file": "/nonexistent/x"}}}, {}, "devices.lobby.password_file"),
    ],
)
def test_missing_secret_file_is_an_error(data: dict[str, object], env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env)
    assert caught.value.key == key
    assert "/nonexistent/" in caught.value.problem
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("00:15:65:AA:BB:CC", "001565aabbcc"),
        ("00-15-65-aa-bb-cc", "001565aabbcc"),
        ("001565AABBCC", "001565aabbcc"),
        ("0015.65aa.bbcc", "001565aabbcc"),
        ("front-desk_2", "front-desk_2"),
        ("ip-192-168-1-50", "ip-192-168-1-50"),
    ],
)
def test_device_ids_are_normalised(raw: str, expected: str) -> None:
    config = parse({"devices": {raw: {"phone_type": "Yealink", "ip": "192.168.1.50:443"}}})
    assert [phone.id for phone in config.devices.phones] == [expected]
    assert config.devices.phones[0].phone_type == "yealink"
    assert config.devices.get(raw) == config.devices.get(expected) == config.devices.phones[0]
    assert config.devices.get("other") is None


def test_devices_table_mixes_settings_and_phones() -> None:
    config = parse({"devices": {"learn": False, "offline_after": 0, "lobby": {"name": "Lobby"}}})
    assert (config.devices.learn, config.devices.offline_after) == (False, 0.0)
    assert [(phone.id, phone.name, phone.verify_tls) for phone in config.devices.phones] == [
        ("lobby", "Lobby", True)
    ]


def test_integers_are_accepted_for_floats() -> None:
    config = parse({"calls": {"ring_timeout": 60}, "poll": {"interval": 0}})
    assert (config.calls.ring_timeout, config.poll.interval) == (60.0, 0.0)
    assert isinstance(config.calls.ring_timeout, float)


SECRETS = ["s3cret-token", "s3cret-ui", "s3cret-mqtt", "s3cret-url", "s3cret-phone"]


def test_secrets_never_show(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-file\n")
    data: dict[str, object] = {
        "http": {"token": "s3cret-token", "ui_password": "s3cret-ui"},
        "mqtt": {"url": "mqtts://bridge:s3cret-url@broker:8883", "password": "s3cret-mqtt"},
        "devices": {"lobby": {"password": "s3cret-phone"}},
    }
    config, _ = parse_config(data, {"AMEGO_HTTP_TOKEN_FILE": str(token_file)})
    public = config.public_dict()
    dumped = json.dumps(public)
    for text in [*SECRETS, "s3cret-file"]:
        assert text not in repr(config)
        assert text not in dumped
    assert str(token_file) not in dumped
    http = public["http"]
    mqtt = public["mqtt"]
    assert isinstance(http, dict)
    assert isinstance(mqtt, dict)
    assert (http["token"], http["token_file"], http["ui_password_file"]) == ("***", "***", "")
    assert mqtt["url"] == "mqtts://bridge:***@broker:8883"
    assert http["allowed_networks"][0] == "127.0.0.0/8"


def test_bad_mqtt_url_error_hides_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"mqtt": {"url": "http://bridge:s3cret@broker"}}, {})
    assert "s3cret" not in str(caught.value)


def test_find_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    explicit, from_env = tmp_path / "explicit.toml", tmp_path / "env.toml"
    explicit.write_text("")
    from_env.write_text("")
    env = {"AMEGO_CONFIG": str(from_env)}
    assert find_config_path(None, {}) is None
    Path("config.toml").write_text("")
    assert find_config_path(None, {}) == Path("config.toml")
    assert find_config_path(None, env) == from_env
    assert find_config_path(str(explicit), env) == explicit


@pytest.mark.parametrize(
    ("arg", "env"),
    [("missing.toml", {}), (None, {"AMEGO_CONFIG": "missing.toml"})],
)
def test_explicit_config_path_must_exist(
    arg: str | None, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("config.toml").write_text("")
    with pytest.raises(ConfigError) as caught:
        find_config_path(arg, env)
    assert caught.value.key == "config"
    assert "missing.toml" in str(caught.value)
