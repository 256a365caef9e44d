"""The server's systemd units (deploy/systemd/): systemd's own verifier accepts them, every command line
is one the real CLI parses, and each is hardened like the edge units."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fieldproof.cli import build_parser
from server.config import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
DOCK_UNIT = ROOT / "firmware-config" / "systemd" / "fieldproof-dock.service"
EXE = "/opt/fieldproof/venv/bin/fieldproof"
ENV_FILE = "/etc/fieldproof/server.env"
CA_DIR = "/srv/fieldproof/ca"
#: Instance names used where a template needs one: an ingest worker number, an API port.
INSTANCES = {"fieldproof-ingest@.service": "1", "fieldproof-api@.service": "8081"}
SERVICES = {
    "fieldproof-migrate.service",
    "fieldproof-ingest@.service",
    "fieldproof-api@.service",
    "fieldproof-log-sequence.service",
    "fieldproof-retention-sweep.service",
}
#: The hardening of the dock's unit that does not concern devices (the server opens none: PrivateDevices).
DEVICE_KEYS = {"DevicePolicy", "DeviceAllow", "SupplementaryGroups", "ReadOnlyPaths"}


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("="))
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read(path, encoding="utf-8")
    return unit


def values(name: str, key: str) -> list[str]:
    """Every space-separated value of ``key`` in a unit, over all its lines (systemd adds them up;
    configparser would keep only the last)."""
    lines = (UNITS / name).read_text("utf-8").splitlines()
    return [v for line in lines if line.startswith(f"{key}=") for v in line.partition("=")[2].split()]


def exec_argv(name: str, key: str = "ExecStart") -> list[str]:
    """A unit's command line with the instance name filled in."""
    line = read_unit(UNITS / name)["Service"][key].replace("\\\n", " ")
    return shlex.split(line.replace("%i", INSTANCES.get(name, "")))


def test_the_unit_files_are_the_expected_ones() -> None:
    assert {p.name for p in UNITS.iterdir()} == {*SERVICES, "fieldproof-retention-sweep.timer"}


def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: scripts/setup.sh installs the systemd package"
    # verify insists that ExecStart binaries exist: copies of the units point at this checkout's command
    # (the only change), and templates get an instance name.
    here = Path(sys.executable).with_name("fieldproof")
    names = []
    for unit in sorted(UNITS.iterdir()):
        text = unit.read_text("utf-8")
        assert unit.suffix == ".timer" or EXE in text
        name = unit.name.replace("@.", f"@{INSTANCES.get(unit.name, '')}.")
        (tmp_path / name).write_text(text.replace(EXE, str(here)), "utf-8")
        names.append(str(tmp_path / name))
    out = subprocess.run([analyze, "verify", "--man=no", *names], capture_output=True, text=True, check=False)
    # verify exits 0 even for unknown keys; any message at all is a finding.
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


@pytest.mark.parametrize(
    ("name", "action", "expected"),
    [
        ("fieldproof-migrate.service", ["migrate"], {}),
        ("fieldproof-ingest@.service", ["ingest"], {}),
        ("fieldproof-api@.service", ["api"], {"port": 8081, "host": None}),
        ("fieldproof-log-sequence.service", ["log-sequence"], {"every": 10.0}),
        (
            "fieldproof-retention-sweep.service",
            ["retention", "sweep"],
            {"non_case_months": 6, "dry_run": False},
        ),
    ],
)
def test_every_command_line_is_one_the_cli_parses(
    name: str, action: list[str], expected: dict[str, object]
) -> None:
    argv = exec_argv(name)
    assert argv[0] == EXE
    assert argv[1 : 2 + len(action)] == ["server", *action]
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit:  # argparse's way of refusing
        pytest.fail(f"{name}: the CLI refuses {shlex.join(argv[1:])}")
    for key, value in expected.items():
        assert getattr(args, key) == value, key
    # Settings come from the environment file, not from options that would hide them.
    assert args.data_dir is None
    assert args.database_url is None
    # And the installed command itself takes it (the same parser, through the console script).
    here = Path(sys.executable).with_name("fieldproof")
    done = subprocess.run([str(here), *argv[1:], "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_units_are_hardened_like_the_edge_units() -> None:
    dock = read_unit(DOCK_UNIT)["Service"]
    hardening = {
        k: v
        for k, v in dock.items()
        if (
            k.startswith(("Protect", "Restrict", "Private", "NoNew", "Lock", "Memory", "SystemCall"))
            or k.endswith("Capabilities")
            or k == "CapabilityBoundingSet"
            or k == "UMask"
        )
        and k not in DEVICE_KEYS
    }
    assert len(hardening) >= 18
    for name in sorted(SERVICES):
        service = read_unit(UNITS / name)["Service"]
        for key, value in hardening.items():
            assert service.get(key) == value, (
                f"{name}: {key}={service.get(key)!r}, the dock unit has {value!r}"
            )
        assert service["PrivateDevices"] == "yes"
        assert service["ProtectProc"] == "invisible"
        assert service["User"] == service["Group"] == "fieldproof"
        assert service["EnvironmentFile"] == ENV_FILE  # no '-': a missing file is an error, not defaults
        assert service["StateDirectory"] == "fieldproof"
        # The data directory the units make writable is the settings' default.
        assert str(ServerSettings.model_fields["data_dir"].default) in values(name, "ReadWritePaths")


def test_only_the_api_may_write_the_ca_directory() -> None:
    for name in sorted(SERVICES):
        writable, read_only = values(name, "ReadWritePaths"), values(name, "ReadOnlyPaths")
        if name == "fieldproof-api@.service":  # the fleet page enrols and revokes (docs/deployment.md)
            assert CA_DIR in writable
        else:
            assert CA_DIR not in writable, name
        if name in ("fieldproof-ingest@.service", "fieldproof-log-sequence.service"):
            assert read_only == [CA_DIR]


def test_every_process_waits_for_the_migration() -> None:
    migrate = read_unit(UNITS / "fieldproof-migrate.service")
    assert migrate["Service"]["Type"] == "oneshot"
    assert migrate["Service"]["RemainAfterExit"] == "yes"
    for name in sorted(SERVICES - {"fieldproof-migrate.service"}):
        unit = read_unit(UNITS / name)["Unit"]
        assert "fieldproof-migrate.service" in unit["Requires"].split(), name
        assert "fieldproof-migrate.service" in unit["After"].split(), name
    for name in ("fieldproof-ingest@.service", "fieldproof-api@.service", "fieldproof-log-sequence.service"):
        service = read_unit(UNITS / name)["Service"]
        assert (service["Type"], service["Restart"]) == ("simple", "on-failure"), name
        assert "WantedBy" in read_unit(UNITS / name)["Install"]


def test_the_retention_sweep_runs_daily() -> None:
    timer = read_unit(UNITS / "fieldproof-retention-sweep.timer")
    assert timer["Timer"]["Unit"] == "fieldproof-retention-sweep.service"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert read_unit(UNITS / "fieldproof-retention-sweep.service")["Service"]["Type"] == "oneshot"
    # systemd's own calendar parser: two consecutive elapses are one day apart.
    out = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=2", timer["Timer"]["OnCalendar"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    times = [
        datetime.strptime(m, "%Y-%m-%d %H:%M:%S")
        for m in re.findall(r"(?:Next elapse|Iter\. #2): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", out)
    ]
    assert len(times) == 2, out
    assert times[1] - times[0] == timedelta(days=1)
    # 02:30 in Asia/Shanghai is 18:30 UTC: at night where the bureau is.
    assert times[0].strftime("%H:%M") == "18:30"
