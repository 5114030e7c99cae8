"""User profiles: TOML files that add a phone type or change a built-in one."""

from pathlib import Path

import pytest

from bridge.cli import main
from bridge.commands import Command, PhoneCommand, build_request
from bridge.config import ConfigError, parse_config
from bridge.events import normalise_event
from bridge.profile_files import ProfileError, load_profiles
from bridge.profiles import BUILTIN_PROFILES

EXAMPLES = Path(__file__).parent.parent / "examples" / "profiles"


def test_no_directory_means_the_builtin_profiles() -> None:
    assert dict(load_profiles("")) == dict(BUILTIN_PROFILES)


def test_the_example_adds_akuvox_on_yealink_events() -> None:
    profiles = load_profiles(str(EXAMPLES))
    akuvox = profiles["akuvox"]
    assert akuvox.vendor == "Akuvox"
    request = build_request(
        PhoneCommand(Command.DIAL, number="+4930123", line="100"), "akuvox", akuvox.commands
    )
    assert request.target == "/fcgi/do?action=MakeCall&number=%2B4930123&line=100"
    assert "answer" not in akuvox.commands.requests  # removed by an empty list
    assert normalise_event("AnswerNewIncomingCall", akuvox)[0] == "call_established"
    assert {url.setting for url in akuvox.event_urls} == {
        url.setting for url in BUILTIN_PROFILES["yealink"].event_urls
    }
    assert profiles["yealink"] == BUILTIN_PROFILES["yealink"]


def test_a_file_named_like_a_builtin_changes_only_what_it_sets(tmp_path: Path) -> None:
    (tmp_path / "Yealink.toml").write_text(
        '[commands]\ndial = "GET /cgi-bin/ConfigManApp.com?key=number={number}"\n'
        '[event_aliases]\nring = "incoming"\n'
        '[event_urls]\nincoming_call = { setting = "action_url.incoming_call", query = "device=$mac" }\n'
    )
    yealink = load_profiles(str(tmp_path))["yealink"]
    builtin = BUILTIN_PROFILES["yealink"]
    dial = build_request(PhoneCommand(Command.DIAL, number="555"), "yealink", yealink.commands)
    assert dial.target == "/cgi-bin/ConfigManApp.com?key=number=555"
    assert yealink.commands.requests["hangup"] == builtin.commands.requests["hangup"]
    assert yealink.vendor == "Yealink"
    assert yealink.event_aliases["ring"] == "incoming_call"
    assert yealink.event_aliases["blindtransfercall"] == "transfer_call"
    urls = {url.event: url.query for url in yealink.event_urls}
    assert urls["incoming_call"] == "device=$mac"
    assert len(urls) == len(builtin.event_urls)


def test_a_post_with_an_xml_body(tmp_path: Path) -> None:
    (tmp_path / "deskphone.toml").write_text(
        '[commands.dial]\nurl = "/xmlService"\nxml = "<Execute><Dial number=\\"{number}\\"/></Execute>"\n'
    )
    desk = load_profiles(str(tmp_path))["deskphone"]
    request = build_request(PhoneCommand(Command.DIAL, number="*21#"), "deskphone", desk.commands)
    assert (request.method, request.target) == ("POST", "/xmlService")
    assert request.body == b'<Execute><Dial number="*21#"/></Execute>'
    assert request.content_type == "text/xml; charset=utf-8"


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("a.toml", "vendr = 'x'\n", "a.toml: vendr: unknown key"),
        ("a.toml", "base = 'nokia'\n", "a.toml: base: 'nokia' is not a built-in phone type"),
        ("a.toml", "[commands]\ndial = 'GET /x?n={nmber}'\n", "commands.dial: unknown variable {nmber}"),
        ("a.toml", "[commands]\nreboot = 'GET /x'\n", "a.toml: commands.reboot: not a command"),
        ("a.toml", "[commands]\ndial = 5\n", "a.toml: commands.dial: must be a request"),
        ("a.toml", "[commands.dial]\nmethod = 'GET'\nxml = '<a/>'\n", "dial.method: a request with a body"),
        ("a.toml", "[event_aliases]\nring = 'ringing'\n", "event_aliases.ring: 'ringing' is not"),
        ("a.toml", "[param_aliases]\nnum = 'number'\n", "a.toml: param_aliases.num: must be one of"),
        ("a.toml", "[control]\nauth = 'ntlm'\n", "a.toml: control.auth: must be http or passcode"),
        ("a.toml", "[control]\nsuccess_status = [2000]\n", "a.toml: control.success_status"),
        ("a.toml", "[control]\nerror_body = '('\n", "a.toml: control.error_body: not a regular expression"),
        ("a.toml", "vendor = \n", "a.toml: Invalid value"),
        ("bad name!.toml", "", "the file name must be the phone type"),
    ],
)  # fmt: skip
def test_a_bad_profile_file_names_the_file_and_key(
    tmp_path: Path, file: str, text: str, message: str
) -> None:
    (tmp_path / file).write_text(text)
    with pytest.raises(ProfileError) as caught:
        load_profiles(str(tmp_path))
    assert message in str(caught.value)
    assert str(tmp_path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_knows_the_types_of_profile_files(tmp_path: Path) -> None:
    devices = {"devices": {"001565aabbcc": {"phone_type": "Akuvox"}}}
    config, _ = parse_config({"profiles": {"dir": str(EXAMPLES)}, **devices}, {})
    assert config.devices.phones[0].phone_type == "akuvox"
    with pytest.raises(ConfigError) as caught:
        parse_config(devices, {})
    assert caught.value.key == "devices.001565aabbcc.phone_type"
    assert "unknown phone type 'akuvox'" in str(caught.value)
    with pytest.raises(ConfigError) as missing:
        parse_config({}, {"AMEGO_PROFILES_DIR": str(tmp_path / "nope")})
    assert missing.value.key == "profiles.dir"


def test_urls_of_a_user_type_and_a_bad_file_stops_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMEGO_PROFILES_DIR", str(EXAMPLES))
    monkeypatch.chdir(tmp_path)
    assert main(["urls", "akuvox", "--server", "192.168.1.10:8080"]) == 0
    out = capsys.readouterr().out
    assert "action_url.incoming_call = http://192.168.1.10:8080/incoming_call/akuvox?device=$mac" in out
    assert "# - Phone > Call Feature > Remote Control: allow 192.168.1.10" in out
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "x.toml").write_text("[commands]\ndial = 'FETCH /'\n")
    monkeypatch.setenv("AMEGO_PROFILES_DIR", str(tmp_path / "profiles"))
    assert main(["check-config"]) == 2
    assert "x.toml: commands.dial" in capsys.readouterr().err


def test_urls_print_the_settings_dialing_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["urls", "yealink", "--server", "192.168.1.10:8080"]) == 0
    yealink = capsys.readouterr().out.splitlines()
    assert "features.action_uri_limit_ip = 192.168.1.10" in yealink
    assert "features.show_action_uri_option = 0" in yealink
    assert main(["urls", "aastra", "--server", "192.168.1.10:8080"]) == 0
    aastra = capsys.readouterr().out.splitlines()
    assert "xml application post list: 192.168.1.10" in aastra
    assert any(
        line.startswith("action uri incoming: http://192.168.1.10:8080/incoming_call/aastra?")
        for line in aastra
    )
    assert main(["urls", "grandstream", "--server", "192.168.1.10:8080"]) == 0
    assert "# - Action URI Allowed IP List: 192.168.1.10" in capsys.readouterr().out
