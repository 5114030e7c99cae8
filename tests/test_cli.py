import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )


def test_help_lists_every_subcommand_of_the_contract() -> None:
    out = run("--help").stdout
    for command in ("run", "check-config", "urls", "calls", "arp", "simulate"):
        assert command in out


def test_check_config_accepts_the_example() -> None:
    result = run("check-config", "--config", "config.example.toml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[mqtt]\nqos = 7\n", "mqtt.qos"),
        ("[http]\nport = 70000\n", "http.port"),
        ('[http]\nport = "80"\n', "http.port"),
        ('[http]\nallowed_networks = ["10.0.0.0/33"]\n', "http.allowed_networks"),
        ('[devices.001565aabbcc]\nphone_type = "nokia"\n', "devices.001565aabbcc.phone_type"),
    ],
)
def test_check_config_names_the_key_in_one_line(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert key in lines[0]


def test_run_refuses_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[mqtt]\nqos = 7\n")
    result = run("run", "--config", str(path))
    assert result.returncode == 2
    assert "mqtt.qos" in result.stderr


def test_unknown_key_is_a_warning_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[http]\nprot = 1\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0
    assert "http.prot" in result.stderr


def test_config_found_through_environment_and_cwd(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[mqtt]\nqos = 7\n")
    assert run("check-config", cwd=tmp_path).returncode == 2


def test_urls_for_yealink_and_snom(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["urls", "yealink", "--server", "192.168.1.10:8080"]) == 0
    yealink = capsys.readouterr().out
    assert (
        "action_url.incoming_call = http://192.168.1.10:8080/incoming_call/yealink?device=$mac&local=$local"
        in yealink
    )
    assert "action_url.off_hook = " in yealink
    assert main(["urls", "snom", "--server", "192.168.1.10:8080"]) == 0
    snom = capsys.readouterr().out
    assert "action_connected_url = http://192.168.1.10:8080/call_established/snom?" in snom
    assert "$call-id" in snom


def test_urls_unknown_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["urls", "nokia"]) == 2
    assert "unknown phone type" in capsys.readouterr().err
