"""``fieldproof demo``: the main job as far as it is built.

Provision a fleet; start Mosquitto (mTLS, ACL, CRL), the ingest and the API on the embedded defaults
(SQLite, the local store); record with the recorder agent (synthetic camera and microphone: there are
none here); verify the spool, tamper with a copy and show the report finding it; dock the recorder —
clock set and signed over the serial control link, every record and file over MQTT to the ingest,
freed on the recorder only after the server's signed acks — and print what was filed; revoke a device
and show its later records flagged by the verifier and refused by the server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from custody.report import render_text
from custody.spool import JOURNAL, MEDIA, Spool
from custody.trust import TrustStore
from custody.verify import ChainReport, ChainVerifier
from fieldproof.durable import write_file, write_private
from fieldproof.services import (
    Service,
    ServiceError,
    Services,
    fieldproof_command,
    free_port,
    mosquitto,
    server_env,
)
from provisioning import enroll, init_ca, revoke, write_broker_config
from provisioning.toml_writer import dumps


def add_parser(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser("demo", help="run the end-to-end demonstration (what is built so far)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for everything the demo makes")
    p.add_argument("--seconds", type=float, default=12, help="seconds REC-0001 records after the trigger")
    p.set_defaults(func=run)


def _verify(ca: Path, spool: Path) -> ChainReport:
    trust = TrustStore.from_paths(ca=[ca / "root-ca.pem"], crl=[ca / "crl.pem"], certs=[ca / "ca-chain.pem"])
    return ChainVerifier(trust).verify_spool(Spool.open(spool))


def _step(n: int, text: str) -> None:
    print(f"\n== {n}. {text}")


class _Recorder:
    """The real recorder agent (synthetic camera and microphone, as fast as it can go), its serial
    control link on one end of a pty pair (the USB CDC-ACM gadget on a real recorder); the dock gets the
    other end."""

    def __init__(self, bundle: Path, out: Path) -> None:
        self.bundle, self.out = bundle, out
        self.spool = out / f"spool-{bundle.name}"
        self.socat: subprocess.Popen[bytes] | None = None
        self.dock_port: str | None = None
        self.agent: Any = None

    def __enter__(self) -> _Recorder:
        from edge.config import load_recorder_config
        from edge.recorder.agent import RecorderAgent
        from edge.recorder.synthetic import synthetic_recorder_config

        socat = shutil.which("socat")
        changes: dict[str, Any] = {}
        if socat is not None:
            a, b = self.out / f"{self.bundle.name}-link", self.out / f"{self.bundle.name}-link-dock"
            self.socat = subprocess.Popen(
                [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 5
            while not (a.exists() and b.exists()) and time.monotonic() < deadline:
                time.sleep(0.02)
            if a.exists() and b.exists():
                changes["link"] = {"port": str(a)}
                self.dock_port = str(b)
        cfg = synthetic_recorder_config(
            self.bundle,
            spool=self.spool,
            socket=self.out / f"{self.bundle.name}.sock",
            segment_seconds=4,
            pre_event_seconds=3,
            **changes,
        )
        self.agent = RecorderAgent(config=load_recorder_config(cfg), config_label=cfg.name, realtime=False)
        self.agent.open()
        return self

    def record(self, *, seconds: float, pre_roll: float, marks: tuple[str, ...] = (), **context: str) -> Path:
        self.agent.set_context(**context)
        self.agent.wait_media(pre_roll)
        self.agent.start_recording()
        for label in marks:
            self.agent.mark(label)
        self.agent.stop_recording(after=seconds)
        return self.spool

    def __exit__(self, *exc: object) -> None:
        if self.agent is not None:
            self.agent.close()
        if self.socat is not None:
            self.socat.terminate()
            self.socat.wait(timeout=10)


def _dock_toml(out: Path, bundle: Path, *, port: int) -> Path:
    """The dock's own config, from its bundle, pointed at the local broker and the demo's folders."""
    data = tomllib.loads((bundle / "dock.toml").read_text("utf-8"))
    data["mount_dir"] = str(out / "dock" / "media")
    data["mqtt"]["brokers"] = [f"127.0.0.1:{port}"]
    for name in ("ca", "cert", "key"):
        data["mqtt"]["tls"][name] = str(bundle / data["mqtt"]["tls"][name])
    data["outbox"]["path"] = str(out / "dock" / "outbox.sqlite")
    data["sync"]["server_cert"] = str(bundle / data["sync"]["server_cert"])
    path = out / "dock" / "dock.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, dumps(data).encode("utf-8"))
    return path


def _sync_once(dock_toml: Path, spool: Path, *, link: str | None, log: Path) -> tuple[int, dict[str, Any]]:
    """``fieldproof dock sync-once`` as the dock service would run it; its exit code and summary."""
    argv = [*fieldproof_command(), "dock", "sync-once", "--config", str(dock_toml), "--spool", str(spool)]
    argv += ["--timeout", "300", "--retry-max", "5", "-v"]
    if link:
        argv += ["--link", link]
    with open(log, "ab") as err:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, timeout=400, check=False)
    try:
        summary: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise ServiceError(f"the dock printed no summary (exit {done.returncode}); see {log}") from None
    return done.returncode, summary


def _segments(api: str, device: str, who: tuple[str, str]) -> list[dict[str, Any]]:
    client = _signed_in(api, *who)
    try:
        r = client.get(f"/api/v1/devices/{device}/segments")
        r.raise_for_status()
        rows: list[dict[str, Any]] = r.json()
    finally:
        client.close()
    return rows


def _print_filed(rows: list[dict[str, Any]]) -> None:
    print(f"   {'seq':>4}  {'status':<8} {'size':>9}  {'sha256':<20} {'recording':<10} {'#':>2}  case number")
    for r in rows:
        print(
            f"   {r['seq']:>4}  {r['status']:<8} {r['size']:>9}  {r['sha256'][:20]:<20} "
            f"{r['recording'][:10]:<10} {r['index']:>2}  {r['case_number']}"
        )


#: A minimal, valid one-page PDF: the inspection note the case handler files with the case.
_NOTE_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
DEMO_CASE = "津人社监察〔2026〕17号"
DEMO_SUBJECT = "91120116MA05JQ2X4C"


def _add_user(env: dict[str, str], out: Path, name: str, *roles: str) -> str:
    """``fieldproof server user add`` as IT would run it; returns the password it was given."""
    password = f"demo-{name}-{os.urandom(6).hex()}"
    pw_file = out / "server" / f".{name}.password"
    write_private(pw_file, (password + "\n").encode())
    argv = [*fieldproof_command(), "server", "user", "add", name, "--password-file", str(pw_file)]
    for role in roles:
        argv += ["--role", role]
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    pw_file.unlink()
    if done.returncode != 0:
        raise ServiceError(f"fieldproof server user add {name} failed: {done.stderr.strip()}")
    return password


def _signed_in(api: str, name: str, password: str) -> Any:
    import httpx

    client = httpx.Client(base_url=api, timeout=30)
    r = client.post("/api/v1/auth/login", json={"username": name, "password": password})
    r.raise_for_status()
    return client


def _case_file(api: str, users: dict[str, str]) -> tuple[bool, str]:
    """Open the demo case as a case handler, file a text record, pull the case file by its number."""
    from urllib.parse import quote

    handler = _signed_in(api, "handler", users["handler"])
    r = handler.post(
        "/api/v1/subjects",
        json={"uscc": DEMO_SUBJECT, "name": "天津某劳务派遣有限公司", "address": "天津市滨海新区"},
    )
    r.raise_for_status()
    subject = r.json()
    r = handler.post(
        "/api/v1/cases",
        json={
            "number": DEMO_CASE,
            "subject_id": subject["id"],
            "matter_code": "CF-02",
            "title": "劳务派遣用工检查",
        },
    )
    r.raise_for_status()
    case = r.json()
    print(f"   case {case['number']} (matter CF-02) opened for {subject['name']} ({subject['uscc']})")
    r = handler.post(
        f"/api/v1/cases/{case['id']}/text-records",
        data={"kind": "inspection-note", "title": "现场检查笔录"},
        files={"file": ("inspection-note.pdf", _NOTE_PDF, "application/pdf")},
    )
    r.raise_for_status()
    print(f"   text record filed: 现场检查笔录 ({(r.json().get('sha256') or '')[:23]}…)")
    path = f"/api/v1/cases/by-number/{quote(DEMO_CASE, safe='')}"
    r = handler.get(path, params={"reason": "demo: case review"})
    r.raise_for_status()
    file = r.json()
    recordings = file.get("recordings") or file.get("footage") or []
    segs = sum(len(rec.get("segments", [])) for rec in recordings)
    print(
        f"   GET {path} → {len(file.get('text_records', []))} text record(s), {len(recordings)} recording(s), "
        f"{segs} segment(s)"
    )
    for rec in recordings:
        print(
            f"     recording {str(rec.get('recording', ''))[:10]} {rec.get('start', '')} → {rec.get('end', '')}"
        )
    handler.close()
    return bool(recordings) and segs > 0 and bool(file.get("text_records")), f"{api}{path}"


def _custody(api: str, users: dict[str, str], ca: Path, out: Path) -> bool:
    """The custodian: the case's chain-of-custody verification, then an export checked offline."""
    import io
    import zipfile
    from urllib.parse import quote

    custodian = _signed_in(api, "custodian", users["custodian"])
    try:
        path = f"/api/v1/cases/by-number/{quote(DEMO_CASE, safe='')}"
        r = custodian.get(f"{path}/verification", params={"format": "text", "reason": "demo: custody check"})
        r.raise_for_status()
        print("   " + "\n   ".join(r.text.strip().splitlines()[:14]))
        r = custodian.post(f"{path}/export", params={"reason": "demo: court bundle"})
        r.raise_for_status()
        export = r.json()
        r = custodian.get(export["download"].removeprefix(api), params={"format": "zip"})
        r.raise_for_status()
    finally:
        custodian.close()
    bundle = out / "export"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        z.extractall(bundle)
    roots = [p.parent for p in bundle.rglob("bagit.txt")]
    if len(roots) != 1:
        raise ServiceError(f"the export holds {len(roots)} bags, expected one")
    argv = [*fieldproof_command(), "verify", str(roots[0]), "--ca", str(ca / "root-ca.pem")]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    print(
        f"   export {export['export_id']}: {export['clips']} clip(s), manifest sha256 "
        f"{export['manifest_sha256'][:16]}…, proved against checkpoint {export['checkpoint_tree_size']}"
    )
    print(f"   offline check, only the fleet root trusted: {' '.join(argv[-4:])} → exit {done.returncode}")
    print("   " + "\n   ".join(done.stdout.strip().splitlines()[:6]))
    return done.returncode == 0


def run(args: argparse.Namespace) -> int:
    """Run the demonstration; exit 0 when every step showed what it should."""
    out: Path = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)  # the demo's own folder: a fresh fleet every run
    with Services() as services:
        return _run(args, out, services)


def _run(args: argparse.Namespace, out: Path, services: Services) -> int:
    ca = out / "ca"
    _step(1, f"Provision the fleet CA in {ca}")
    init_ca(ca)
    _step(2, "Enrol recorders REC-0001 and REC-0002 and dock DOCK-01")
    for device, role in (("REC-0001", "recorder"), ("REC-0002", "recorder"), ("DOCK-01", "dock")):
        print(f"   {device}: {enroll(ca, device=device, role=role)}")

    mqtt_port, api_port = free_port(), free_port()
    server_dir = out / "server"
    logs = out / "logs"
    _step(3, "Start the server side: Mosquitto (mutual TLS, per-device ACL, CRL), ingest, API")
    conf = write_broker_config(ca, out=out / "broker", port=mqtt_port)
    services.start(mosquitto(conf, port=mqtt_port, log=logs / "mosquitto.log"))
    env = server_env(data_dir=server_dir, ca_dir=ca, mqtt_port=mqtt_port, api_port=api_port)
    env["FIELDPROOF_AUTH_COOKIE_SECURE"] = "false"  # plain HTTP on loopback only
    migrate = subprocess.run(
        [*fieldproof_command(), "server", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if migrate.returncode != 0:
        raise ServiceError(f"fieldproof server migrate failed: {migrate.stderr.strip()}")
    services.start(
        Service("ingest", [*fieldproof_command(), "server", "ingest"], logs / "ingest.log", env=env),
        ready="subscribing to",
    )
    services.start(
        Service("api", [*fieldproof_command(), "server", "api"], logs / "api.log", port=api_port, env=env)
    )
    api = f"http://127.0.0.1:{api_port}"
    users = {
        name: _add_user(env, out, name, role)
        for name, role in (("it-admin", "it-admin"), ("handler", "case-handler"), ("custodian", "custodian"))
    }
    print("   users (fieldproof server user add): it-admin, handler (case handler), custodian")
    print(f"   broker 127.0.0.1:{mqtt_port} (mTLS), database {server_dir / 'fieldproof.db'}, API {api}")
    print(f"   logs in {logs}")

    _step(
        4,
        f"REC-0001 records {args.seconds:g} s with 3 s of pre-event footage (synthetic camera and "
        "microphone; H.264/AAC fMP4 segments of 4 s, stamped, hashed, signed, chained)",
    )
    with _Recorder(ca / "devices" / "REC-0001", out) as rec:
        spool_dir = rec.record(
            seconds=args.seconds,
            pre_roll=4,
            marks=("show-credentials", "inform-rights"),
            officer="12010019001",
            case=DEMO_CASE,
            subject=DEMO_SUBJECT,
            matter="CF-02",
            scene="onsite-inspection",
            proof="用人单位违反劳务派遣规定的现场情况",
        )
        media_before = sorted(p.name for p in (spool_dir / MEDIA).rglob("*") if p.is_file())
        lines = (spool_dir / JOURNAL).read_bytes().splitlines()
        print(f"   {len(lines)} records in {spool_dir / JOURNAL}; {len(media_before)} segment files")

        _step(5, "Verify the spool against the fleet root")
        report = _verify(ca, spool_dir)
        print(render_text(report))

        tampered = out / "spool-REC-0001-tampered"
        _step(6, f"Tamper with a copy ({tampered}): change one byte of a clip, delete one record")
        shutil.copytree(spool_dir, tampered)
        clip = sorted((tampered / MEDIA).rglob("*.mp4"))[0]
        data = bytearray(clip.read_bytes())
        data[len(data) // 2] ^= 0x20
        clip.write_bytes(bytes(data))
        journal = (tampered / JOURNAL).read_bytes().splitlines(keepends=True)
        del journal[2]
        (tampered / JOURNAL).write_bytes(b"".join(journal))
        bad = _verify(ca, tampered)
        print(render_text(bad))

        dock_toml = _dock_toml(out, ca / "devices" / "DOCK-01", port=mqtt_port)
        _step(
            7,
            "Dock REC-0001 at DOCK-01: the dock verifies the chain, sets the clock over the control link "
            "(a signed clock record), sends every record and file over MQTT; ingest checks signature, "
            "chain and hash, stores, commits and only then acks, signed; the recorder frees only acked files",
        )
        code, summary = _sync_once(dock_toml, spool_dir, link=rec.dock_port, log=logs / "dock.log")
        print(f"   dock exit {code}; outbox states {summary['states']}; clock {summary.get('clock')}")
        print(f"   files freed on the recorder after the server's signed acks: {len(summary['released'])}")
    filed = _segments(api, "REC-0001", ("custodian", users["custodian"]))
    _step(8, f"What the server filed for REC-0001 ({api}/api/v1/devices/REC-0001/segments)")
    _print_filed(filed)
    left = sorted(p.name for p in (spool_dir / MEDIA).rglob("*") if p.is_file())
    after = _verify(ca, spool_dir)
    print(
        f"   recorder spool: {len(media_before)} segment files before docking, {len(left)} after; "
        f"its chain now {'ALL SOUND' if after.all_sound else 'HAS FINDINGS: ' + ', '.join(sorted(after.codes()))}"
    )

    _step(
        9,
        "The case file: a case handler opens the case, files a text record, pulls everything by case number",
    )
    case_ok, case_url = _case_file(api, users)
    _step(
        10,
        "The custodian: chain-of-custody verification of the case, then a court bundle (BagIt) checked offline",
    )
    custody_ok = _custody(api, users, ca, out)

    _step(
        11, "REC-0002 records twice; it is then reported lost between the two, and IT revokes it as of then"
    )
    b2 = ca / "devices" / "REC-0002"
    with _Recorder(b2, out) as rec2:
        stolen = rec2.record(seconds=4, pre_roll=0, officer="12010019002")
        time.sleep(1.2)  # CRL times have whole seconds
        revoked_at = datetime.now(UTC).replace(microsecond=0)
        time.sleep(1.2)
        rec2.record(seconds=4, pre_roll=0, officer="12010019002")
    revoke(ca, device="REC-0002", at=revoked_at, reason="keyCompromise")
    print(f"   revoked as of {revoked_at.isoformat()}")
    rev = _verify(ca, stolen)
    print(render_text(rev))
    code2, summary2 = _sync_once(dock_toml, stolen, link=None, log=logs / "dock.log")
    print(
        f"   docked anyway: dock exit {code2}; outbox states {summary2['states']}; the server refused "
        f"{len(summary2['rejected'])} records:"
    )
    for r in summary2["rejected"][:3]:
        print(f"     seq {r['seq']}: {r['reason']}")

    stored = [r for r in filed if r["status"] == "stored"]
    segments_in_chain = sum(1 for line in lines if b'"kind":"segment"' in line)
    ok = (
        report.all_sound
        and not bad.all_sound
        and not rev.all_sound
        and code == 0
        and len(stored) == segments_in_chain == len(media_before)
        and not left
        and after.all_sound
        and code2 == 1
        and summary2["rejected"]
        and all(r["reason"].startswith("revoked") for r in summary2["rejected"])
        and case_ok
        and custody_ok
    )
    _step(12, "Summary")
    print(
        f"   sound spool: {'ALL SOUND' if report.all_sound else 'FINDINGS'}; tampered copy: "
        f"{', '.join(sorted(bad.codes()))}; revoked device: {', '.join(sorted(rev.codes()))}"
    )
    print(
        f"   filed: {len(stored)} of {segments_in_chain} segments of REC-0001 stored and verified; "
        f"{len(left)} left on the recorder; REC-0002's records after its revocation refused"
    )
    print(
        f"   Check the spool yourself: fieldproof verify {spool_dir} --ca {ca / 'root-ca.pem'} "
        f"--certs {ca / 'ca-chain.pem'} --crl {ca / 'crl.pem'}"
    )
    print(
        f"   Serve what was filed: FIELDPROOF_DATA_DIR={server_dir} FIELDPROOF_AUTH_COOKIE_SECURE=false "
        f"fieldproof server api "
        f"--port {api_port}  → {api}/api/v1/devices/REC-0001/segments"
    )
    print(f"   The case file by its number (sign in first, POST /api/v1/auth/login): {case_url}")
    from urllib.parse import quote

    # The case handler's password, kept (0600) so that the case page can be signed in to afterwards.
    write_private(out / "handler.password", (users["handler"] + "\n").encode())
    print(
        f"   The demo case page (serve as above; sign in as handler, password in "
        f"{out / 'handler.password'}):\n   {api}/case?number={quote(DEMO_CASE, safe='')}"
    )
    print(f"\n{'DEMO OK' if ok else 'DEMO FAILED: a step did not show what it should (see above)'}")
    return 0 if ok else 1
