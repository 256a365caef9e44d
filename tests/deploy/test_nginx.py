"""deploy/nginx/fieldproof.conf, run for real: Debian's nginx with this very file (ports, host name and
certificate paths rewritten, nothing else) terminating TLS in front of two real `fieldproof server api`
processes on one SQLite database. Sign-in, footage seeking with Range, the proxy headers the API relies
on, session affinity, and a text-record upload larger than nginx's default body limit all go through it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from custody.signing import Ed25519Signer
from edge.sync.protocol import chunk_properties, record_message
from fieldproof.sample_chain import write_sample_spool
from fieldproof.services import Service, Services, fieldproof_command, free_port
from provisioning import enroll, init_ca
from server.config import ServerSettings
from server.db import make_engine, session_factory
from server.devices.registry import DeviceRegistry
from server.evidence.models import EvidenceFile
from server.evidence.store import LocalBlobStore
from server.ingest.acks import AckSigner
from server.ingest.handler import IngestHandler
from tests.server.dock import spool_records

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "fieldproof.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HOST = "localhost"  # the certificate's name; the proxy refuses any other in the TLS handshake
DEVICE = "REC-0001"
SEGMENT_SIZE = 3_000_000  # several MiB: streamed through the proxy, not a single buffer
USCC = "91120116MA05JQ2X4C"


@dataclass
class Site:
    url: str
    port: int
    http_port: int
    tls: ssl.SSLContext
    api_logs: list[Path]
    passwords: dict[str, str]
    segments: list[tuple[int, bytes]]  # (seq, file bytes) of REC-0001's filed segments

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.tls, timeout=60)

    @contextlib.contextmanager
    def signed_in(self, name: str) -> Iterator[httpx.Client]:
        with self.client() as client:
            r = client.post("/api/v1/auth/login", json={"username": name, "password": self.passwords[name]})
            assert r.status_code == 200, r.text
            yield client


def _replace(text: str, old: str, new: str, count: int) -> str:
    """``old`` → ``new``, which must occur exactly ``count`` times (else the config changed: update the test)."""
    assert text.count(old) == count, f"{old!r} occurs {text.count(old)} times in {SITE.name}, not {count}"
    return text.replace(old, new)


def site_config(tmp: Path, *, port: int, http_port: int, apis: list[int], cert: Path, key: Path) -> Path:
    """deploy/nginx/fieldproof.conf with loopback ports, the test's name and certificate; nothing else."""
    text = SITE.read_text("utf-8")
    text = _replace(text, "server 127.0.0.1:8081 ", f"server 127.0.0.1:{apis[0]} ", 1)
    text = _replace(text, "server 127.0.0.1:8082 ", f"server 127.0.0.1:{apis[1]} ", 1)
    text = _replace(text, "listen 80;", f"listen 127.0.0.1:{http_port};", 1)
    text = _replace(text, "listen 443 ssl", f"listen 127.0.0.1:{port} ssl", 2)
    text = re.sub(r"^\s*listen \[::\]:.*\n", "", text, flags=re.M)  # no IPv6 loopback needed
    text = _replace(text, "server_name evidence.example.gov.cn;", f"server_name {HOST};", 2)
    text = _replace(text, "/etc/fieldproof/tls/fullchain.pem", str(cert), 1)
    text = _replace(text, "/etc/fieldproof/tls/privkey.pem", str(key), 1)
    (tmp / "site.conf").write_text(text, "utf-8")
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / "temp" / d).mkdir(parents=True)
    main = tmp / "nginx.conf"
    main.write_text(
        f"""
# The test's own nginx. Workers as root: its files are under pytest's 0700 temp directory (Debian's
# /etc/nginx/nginx.conf runs them as www-data).
user root;
worker_processes 2;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/temp/client_body;
    proxy_temp_path {tmp}/temp/proxy;
    fastcgi_temp_path {tmp}/temp/fastcgi;
    uwsgi_temp_path {tmp}/temp/uwsgi;
    scgi_temp_path {tmp}/temp/scgi;
    include {tmp}/site.conf;
}}
""",
        "utf-8",
    )
    return main


def _ingest(settings: ServerSettings, ca: Path, spool: Path) -> list[tuple[int, bytes]]:
    """File a spool through the real ingest handler (records, then each file in one chunk)."""
    handler = IngestHandler(
        prefix=settings.topic_prefix,
        factory=session_factory(make_engine(settings.db_url, immediate=True)),
        store=LocalBlobStore(settings.store_root, settings.staging_dir),
        registry=DeviceRegistry(ca),
        signer=AckSigner.from_ca_dir(ca),
        actor="test",
    )
    up = f"{settings.topic_prefix}/dev/DOCK-01/up/"
    cert = (ca / "devices" / DEVICE / "signing.pem").read_text()
    filed = []
    for i, (line, rec) in enumerate(spool_records(spool)):
        assert handler.handle(up + "record", record_message(DEVICE, line, [cert] if i == 0 else None))
        if rec["kind"] == "segment":
            data = (spool / "media" / rec["body"]["file"]).read_bytes()
            props = chunk_properties(
                recorder=DEVICE, seq=rec["seq"], digest=rec["body"]["digest"], offset=0, size=len(data)
            )
            assert handler.handle(up + "chunk", data, props)
            filed.append((rec["seq"], data))
    with handler.factory() as session:
        stored = session.scalars(select(EvidenceFile.status)).all()
    assert stored == ["stored"] * len(filed), stored
    return filed


def _add_user(env: dict[str, str], tmp: Path, name: str, role: str) -> str:
    password = f"deploy-{name}-{os.urandom(8).hex()}"
    pw = tmp / f"{name}.password"
    pw.write_text(password + "\n")
    argv = [*fieldproof_command(), "server", "user", "add", name, "--role", role, "--password-file", str(pw)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return password


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    assert Path(NGINX).exists(), "nginx is missing: scripts/setup.sh installs the Debian package nginx"
    tmp = tmp_path_factory.mktemp("deploy-nginx")
    ca, data = tmp / "ca", tmp / "data"
    init_ca(ca)
    enroll(ca, device=DEVICE, role="recorder")
    enroll(ca, device="DOCK-01", role="dock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDPROOF_")}
    env |= {"FIELDPROOF_DATA_DIR": str(data), "FIELDPROOF_CA_DIR": str(ca)}
    done = subprocess.run(
        [*fieldproof_command(), "server", "migrate"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr

    bundle = ca / "devices" / DEVICE
    write_sample_spool(
        tmp / "spool",
        signer=Ed25519Signer.from_files(bundle / "signing.key", bundle / "signing.pem"),
        device=DEVICE,
        segments=2,
        media=lambda i: os.urandom(SEGMENT_SIZE + i),
        ca_chain=(ca / "ca-chain.pem").read_bytes(),
        start=datetime.now(UTC) - timedelta(minutes=30),  # inside the fresh certificates' validity
    )
    segments = _ingest(ServerSettings(data_dir=data, ca_dir=ca), ca, tmp / "spool")
    passwords = {
        "custodian": _add_user(env, tmp, "custodian", "custodian"),
        "handler": _add_user(env, tmp, "handler", "case-handler"),
    }

    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=DNS:{HOST}"],
        check=True, capture_output=True,
    )  # fmt: skip
    port, http_port = free_port(), free_port()
    apis = [free_port(), free_port()]
    with Services() as services:
        logs = []
        for n, api_port in enumerate(apis, 1):
            log = tmp / f"api-{n}.log"
            argv = [
                *fieldproof_command(),
                "server",
                "api",
                "--port",
                str(api_port),
            ]  # as fieldproof-api@.service
            services.start(Service(f"api-{n}", argv, log, port=api_port, env=env), timeout=60)
            logs.append(log)
        conf = site_config(tmp, port=port, http_port=http_port, apis=apis, cert=cert, key=key)
        nginx = Service("nginx", [NGINX, "-e", "stderr", "-p", str(tmp), "-c", str(conf)], tmp / "nginx.log")
        nginx.port = port
        services.start(nginx)
        yield Site(
            url=f"https://{HOST}:{port}",
            port=port,
            http_port=http_port,
            tls=ssl.create_default_context(cafile=str(cert)),
            api_logs=logs,
            passwords=passwords,
            segments=segments,
        )


def test_footage_seeks_with_range_through_the_proxy(site: Site) -> None:
    with site.signed_in("custodian") as client:
        for seq, data in site.segments:
            url = f"/api/v1/segments/{DEVICE}/{seq}/media"
            part = client.get(url, headers={"Range": "bytes=1000-65535"})
            assert part.status_code == 206, part.text
            assert part.headers["content-range"] == f"bytes 1000-65535/{len(data)}"
            assert part.content == data[1000:65536]
            tail = client.get(url, headers={"Range": "bytes=-100"})
            assert tail.status_code == 206
            assert tail.content == data[-100:]
            # The whole file, streamed through (proxy_buffering off), byte for byte.
            with client.stream("GET", url) as whole:
                assert whole.status_code == 200
                assert whole.headers["accept-ranges"] == "bytes"
                assert b"".join(whole.iter_bytes()) == data
            beyond = client.get(url, headers={"Range": f"bytes={len(data)}-"})
            assert beyond.status_code == 416
        # HSTS on every answer the proxy gives, errors included.
        assert part.headers["strict-transport-security"] == "max-age=31536000"
        assert beyond.headers["strict-transport-security"] == "max-age=31536000"


def test_the_session_cookie_is_secure_and_the_api_sees_https_and_the_host(site: Site) -> None:
    with site.client() as client:
        login = client.post(
            "/api/v1/auth/login", json={"username": "custodian", "password": site.passwords["custodian"]}
        )
        assert login.status_code == 200
        cookie = login.headers["set-cookie"]
        assert "fieldproof_session=" in cookie
        assert "secure" in cookie.lower()  # FIELDPROOF_AUTH_COOKIE_SECURE's default, kept behind TLS
        # An absolute URL the API builds (Starlette's trailing-slash redirect) uses the scheme from
        # X-Forwarded-Proto and the Host nginx passed on, port included: uvicorn honoured the headers.
        moved = client.get("/api/v1/cases/")
        assert moved.status_code == 307
        assert moved.headers["location"] == f"https://{HOST}:{site.port}/api/v1/cases"
    with site.client() as browser:
        # The web sign-in form checks the Origin against the Host it is given: the proxy's Host header
        # must be the browser's (with the port), or every form post would be refused as cross-site.
        origin = {"Origin": f"https://{HOST}:{site.port}"}
        form = {"username": "custodian", "password": site.passwords["custodian"], "next": "/"}
        signed = browser.post("/login", data=form, headers=origin)
        assert signed.status_code == 303, signed.text
        assert "secure" in signed.headers["set-cookie"].lower()
        forged = browser.post("/login", data=form, headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403


def test_plain_http_redirects_and_other_names_are_refused(site: Site) -> None:
    r = httpx.get(f"http://127.0.0.1:{site.http_port}/cases?x=1", headers={"Host": HOST})
    assert r.status_code == 301
    assert r.headers["location"] == f"https://{HOST}/cases?x=1"
    # A TLS client asking for another name gets no certificate and no answer (ssl_reject_handshake).
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", site.port), timeout=10) as raw,
        pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name"),
    ):
        ctx.wrap_socket(raw, server_hostname="other.example.gov.cn")


def _probes(site: Site, tag: str) -> list[int]:
    """How many requests carrying ``tag`` each API process logged."""
    return [log.read_text(errors="replace").count(tag) for log in site.api_logs]


def test_requests_spread_over_the_api_processes_and_a_session_sticks_to_one(site: Site) -> None:
    with site.client() as anonymous:
        for i in range(24):
            assert anonymous.get(f"/api/v1/auth/me?probe=spread-{i}").status_code == 401
    spread = _probes(site, "probe=spread-")
    assert sum(spread) == 24
    assert min(spread) > 0, f"one API process got every request: {spread}"
    with site.signed_in("custodian") as client:
        for i in range(12):
            assert client.get(f"/api/v1/auth/me?probe=stick-{i}").status_code == 200
    assert sorted(_probes(site, "probe=stick-")) == [0, 12]


def test_a_large_text_record_uploads_through_the_proxy(site: Site) -> None:
    with site.signed_in("handler") as client:
        subject = client.post(
            "/api/v1/subjects",
            json={"uscc": USCC, "name": "天津某劳务派遣有限公司", "address": "天津市滨海新区"},
        )
        assert subject.status_code == 201, subject.text
        body = {
            "number": "津人社监察〔2026〕31号",
            "subject_id": subject.json()["id"],
            "matter_code": "CF-02",
        }
        case = client.post("/api/v1/cases", json=body)
        assert case.status_code == 201, case.text
        # 20 MiB: twenty times nginx's default limit, well inside the API's 64 MiB.
        pdf = b"%PDF-1.4\n" + os.urandom(20 * 1024 * 1024) + b"\n%%EOF\n"
        up = client.post(
            f"/api/v1/cases/{case.json()['id']}/text-records",
            data={"kind": "inquiry-transcript", "title": "询问笔录"},
            files={"file": ("transcript.pdf", pdf, "application/pdf")},
        )
        assert up.status_code == 201, up.text
        got = client.get(up.json()["content_url"], headers={"Range": "bytes=0-8"})
        assert got.status_code == 206
        assert got.content == pdf[:9]
        cookie = client.cookies["fieldproof_session"]
    # Beyond the API's limit and nginx's (65m), nginx answers 413 from the Content-Length alone, before
    # a byte of the body (a raw request: HTTP clients will not announce a body they do not send).
    head = (
        f"POST /api/v1/cases/{case.json()['id']}/text-records HTTP/1.1\r\nHost: {HOST}:{site.port}\r\n"
        f"Cookie: fieldproof_session={cookie}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {70 * 1024 * 1024}\r\n\r\n"
    )
    with (
        socket.create_connection(("127.0.0.1", site.port), timeout=10) as raw,
        site.tls.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        tls.sendall(head.encode())
        assert tls.recv(65536).startswith(b"HTTP/1.1 413 ")


def _locations() -> dict[str, str]:
    """The regex locations of the site: pattern → body."""
    text = SITE.read_text("utf-8")
    return dict(re.findall(r"^\s*location ~ (\S+) \{\n(.*?)^\s*\}", text, flags=re.M | re.S))


def test_the_streaming_and_upload_locations_match_the_apis_routes() -> None:
    from server.cases.records import MAX_SIZE

    locations = _locations()
    media = next(p for p in locations if "media" in p)
    upload = next(p for p in locations if p.endswith("text-records$"))
    # Every route that answers with a file, with sample values: nginx's PCRE and Python's re agree
    # on these simple patterns.
    for path in (
        f"/api/v1/segments/{DEVICE}/17/media",
        "/api/v1/text-records/3/content",
        "/api/v1/cases/by-number/津人社监察〔2026〕17号/exports/20261127T0830-ab12",
    ):
        assert re.match(media, path), path
    for path in (
        "/api/v1/segments/REC-0001/17",
        "/api/v1/text-records/3",
        "/api/v1/cases/by-number/x/export",
    ):
        assert not re.match(media, path), path
    assert "proxy_buffering off;" in locations[media]
    assert re.match(upload, "/api/v1/cases/12/text-records")
    limit = re.search(r"client_max_body_size (\d+)m;", locations[upload])
    assert limit is not None
    assert int(limit[1]) * 1024 * 1024 > MAX_SIZE  # the API's own limit decides, not the proxy's
    assert "proxy_request_buffering off;" in locations[upload]
    # The routes those paths stand for exist in the API.
    routes = {
        "/api/v1/segments/{device}/{seq}/media",
        "/api/v1/text-records/{record_id}/content",
        "/api/v1/cases/by-number/{number}/exports/{export_id}",
        "/api/v1/cases/{case_id}/text-records",
    }
    assert routes <= _route_paths()


def _route_paths() -> set[str]:
    from server.cases.views import router as cases
    from server.evidence.views import router as evidence
    from server.export.views import router as export

    return {
        "/api/v1" + r.path.replace(":path", "") for router in (cases, evidence, export) for r in router.routes
    }  # type: ignore[attr-defined]
