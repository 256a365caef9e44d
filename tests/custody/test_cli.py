"""``fieldproof verify``: exit 0 sound, 1 findings, 2 cannot run — with a message, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from custody.spool import JOURNAL, MEDIA
from fieldproof.cli import main
from tests.custody.conftest import Fleet


def trust_args(fleet: Fleet) -> list[str]:
    return [
        "--ca",
        str(fleet.ca / "root-ca.pem"),
        "--certs",
        str(fleet.ca / "ca-chain.pem"),
        "--crl",
        str(fleet.ca / "crl.pem"),
    ]


def test_sound_spool_exits_0(fleet: Fleet, pristine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(pristine), *trust_args(fleet)]) == 0
    assert "ALL SOUND" in capsys.readouterr().out


def test_findings_exit_1_with_json(
    fleet: Fleet, spool_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = sorted((spool_copy / MEDIA).rglob("*.mp4"))[1]
    clip.write_bytes(clip.read_bytes()[::-1])
    assert main(["verify", str(spool_copy), *trust_args(fleet), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["all_sound"] is False
    assert [f["code"] for f in report["findings"]] == ["hash-mismatch"]
    assert report["findings"][0]["advice"]
    assert report["sound"] == report["records"] - 1


def test_witness_argument(fleet: Fleet, spool_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = len((spool_copy / JOURNAL).read_bytes().splitlines())
    assert main(["verify", str(spool_copy), *trust_args(fleet), "--expect-last", str(n - 1)]) == 0
    assert main(["verify", str(spool_copy), *trust_args(fleet), "--expect-last", str(n + 3)]) == 1
    assert "truncated" in capsys.readouterr().out
    assert main(["verify", str(spool_copy), *trust_args(fleet), "--expect-last", "soon"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "/nonexistent/spool", "--ca", "{ca}"], "is not a folder"),
        (["verify", "{tmp}", "--ca", "{ca}"], "not a Fieldproof spool"),
        (["verify", "{spool}", "--ca", "/nonexistent/root.pem"], "does not exist"),
        (["verify", "{spool}", "--ca", "{journal}"], "no CA certificate"),
        (["verify", "{spool}", "--ca", "{ca}", "--crl", "{journal}"], "not a readable CRL"),
    ],
)
def test_cannot_run_exits_2_with_a_message(
    fleet: Fleet,
    pristine: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    subs = {
        "ca": str(fleet.ca / "root-ca.pem"),
        "tmp": str(tmp_path),
        "spool": str(pristine),
        "journal": str(pristine / JOURNAL),
    }
    assert main([a.format(**subs) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_bad_arguments_exit_2_from_the_console_script(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "fieldproof"
    r = subprocess.run([str(exe), "verify"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "required" in r.stderr
    assert "Traceback" not in r.stderr
