"""A provisioned recorder with synthetic sources (no camera here), and helpers to run its command."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.recorder.synthetic import synthetic_recorder_config
from provisioning import enroll, init_ca

EXE = str(Path(sys.executable).with_name("fieldproof"))
_DEVICES = itertools.count(1)


@pytest.fixture(scope="session")
def recorder_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ca = tmp_path_factory.mktemp("recorder-fleet") / "ca"
    init_ca(ca)
    return ca


@pytest.fixture
def make_recorder(recorder_ca: Path, tmp_path: Path) -> Any:
    """Enrol a fresh recorder and write its synthetic config; returns (config path, spool path)."""

    def make(**kw: Any) -> tuple[Path, Path]:
        device = f"REC-{next(_DEVICES):05d}"
        bundle = enroll(recorder_ca, device=device, role="recorder")
        spool = kw.pop("spool", tmp_path / f"spool-{device}")
        cfg = synthetic_recorder_config(bundle, spool=spool, socket=tmp_path / f"{device}.sock", **kw)
        return cfg, spool

    return make


def fieldproof(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the fieldproof command; on failure show what it printed."""
    r = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"fieldproof {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def verify(spool: Path, ca: Path, *extra: str) -> dict[str, Any]:
    """Verify a spool with the fleet root; returns the JSON report (and the exit code inside)."""
    r = fieldproof(
        "verify",
        str(spool),
        "--ca",
        str(ca / "root-ca.pem"),
        "--certs",
        str(ca / "ca-chain.pem"),
        "--crl",
        str(ca / "crl.pem"),
        "--json",
        *extra,
        check=False,
    )
    assert r.returncode in (0, 1), r.stderr
    report: dict[str, Any] = json.loads(r.stdout)
    report["exit"] = r.returncode
    return report


def records(spool: Path) -> list[dict[str, Any]]:
    """The records of a spool's journal, in order."""
    return [json.loads(x)["record"] for x in (spool / "chain.jsonl").read_text("utf-8").splitlines()]
