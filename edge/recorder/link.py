"""The serial control link between a docked recorder and its dock: JSON lines over pyserial.

On hardware the link is the recorder's USB CDC-ACM gadget (``/dev/ttyGS0`` on the recorder,
``/dev/fieldproof-ctl-*`` on the dock); in tests, a socat pty pair. One request per line, one answer
per line, both carrying the request's ``id`` (docs/dock.md, "The control link")::

    → {"v": 1, "id": 7, "op": "identity"}
    ← {"v": 1, "id": 7, "ok": true, "device": "REC-0001", "role": "recorder", "firmware": …, "spool": …}
    ← {"v": 1, "id": 7, "ok": false, "error": "what is wrong"}

Operations: ``identity``, ``status``, ``clock-probe`` + ``set-clock`` (the dock measures the offset,
the *recorder* signs the ``clock`` record), ``records`` (journal lines from a seq: the dock sees
records chained after docking without re-reading the mass-storage mount) and ``release``
(erase-after-ack: the recorder checks the server's signature on every ack itself — the dock is a
transport and is never trusted to say a file is safe to free).

Only ASCII goes over the wire (``ensure_ascii``), so a line can never be split inside a character.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody.canonical import canonical
from custody.signing import key_id
from custody.spool import JOURNAL
from custody.timefmt import parse_timestamp, utc_timestamp
from custody.trust import KeyStatus, TrustStore, load_certificates
from fieldproof.errors import FieldproofError

log = logging.getLogger(__name__)

LINK_VERSION: Final = 1
MAX_LINE: Final = 4 * 1024 * 1024
#: A dock may forward at most this many acks in one release request.
MAX_RELEASE: Final = 256
#: The most lines one ``records`` answer carries; the dock asks again from the next seq.
MAX_RECORDS: Final = 256
#: A transit estimate larger than this is no measurement of a USB or pty link.
MAX_TRANSIT_MS: Final = 2000
SERVER_SIGNING_CN: Final = "fieldproof-server"
_PROBES_KEPT: Final = 16
_POWER_SUPPLY = Path("/sys/class/power_supply")


class LinkError(FieldproofError):
    """The control link failed: the port cannot be opened, the recorder did not answer, or refused."""


# -- what both sides need --------------------------------------------------------------------------


def load_server_keys(cert: Path, *, ca_chain: Path | None = None) -> dict[str, Ed25519PublicKey]:
    """The server's ack-signing key by key id, from ``server-signing.pem``.

    With ``ca_chain`` (the fleet's ``ca-chain.pem`` from the device bundle), the certificate must be an
    Ed25519 certificate issued under that chain with CN ``fieldproof-server``: a planted file then
    cannot make a device accept forged acks.
    """
    if not cert.is_file():
        raise LinkError(
            f"the server's signing certificate {cert} is missing; provisioning puts server-signing.pem "
            "in every device bundle — copy it next to the device config"
        )
    try:
        certs = load_certificates(cert)
    except FieldproofError as exc:
        raise LinkError(f"cannot read the server's signing certificate {cert}: {exc}") from exc
    if not certs:
        raise LinkError(f"{cert} holds no certificate")
    trust = None
    if ca_chain is not None:
        try:
            trust = TrustStore(roots=load_certificates(ca_chain))
        except FieldproofError as exc:
            raise LinkError(f"cannot use the fleet CA chain {ca_chain}: {exc}") from exc
    keys: dict[str, Ed25519PublicKey] = {}
    for c in certs:
        pub = c.public_key()
        if not isinstance(pub, Ed25519PublicKey):
            continue
        if trust is not None:
            judged = trust.evaluate(c)
            if judged.status is not KeyStatus.TRUSTED or judged.device != SERVER_SIGNING_CN:
                raise LinkError(
                    f"{cert} is not the fleet's server-signing certificate ({judged.detail}; CN "
                    f"{judged.device!r}); acks signed with it would not be trusted"
                )
        keys[key_id(c)] = pub
    if not keys:
        raise LinkError(f"{cert} holds no Ed25519 certificate; the server signs acks with Ed25519")
    return keys


def battery() -> dict[str, Any] | None:
    """The first battery under /sys/class/power_supply (capacity %, status), or None when there is none."""
    try:
        supplies = sorted(_POWER_SUPPLY.iterdir())
    except OSError:
        return None
    for d in supplies:
        try:
            if (d / "type").read_text().strip() != "Battery":
                continue
        except OSError:
            continue
        out: dict[str, Any] = {"name": d.name, "capacity_pct": None, "status": None}
        with contextlib.suppress(OSError, ValueError):
            out["capacity_pct"] = int((d / "capacity").read_text().strip())
        with contextlib.suppress(OSError):
            out["status"] = (d / "status").read_text().strip()
        return out
    return None


def spool_usage(root: Path) -> dict[str, Any]:
    """Bytes the spool's files take, and the free and total bytes of its file system."""
    used = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                used += os.lstat(os.path.join(dirpath, name)).st_size
    free: int | None = None
    total: int | None = None
    with contextlib.suppress(OSError):
        du = shutil.disk_usage(root)
        free, total = du.free, du.total
    return {"path": str(root), "used_bytes": used, "free_bytes": free, "total_bytes": total}


def _encode(msg: Mapping[str, Any]) -> bytes:
    return json.dumps(msg, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def _open_serial(port: str, baud: int) -> Any:
    import serial  # type: ignore[import-untyped]  # pyserial: only modules that talk to a port import it

    try:
        s = serial.Serial(port, baudrate=baud, timeout=0.05, write_timeout=10)
    except (serial.SerialException, OSError) as exc:
        raise LinkError(f"cannot open the control link {port}: {exc}") from exc
    return s


class _LineReader:
    """Whole lines from a pyserial port, across read timeouts; over-long lines are dropped."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self._buf = bytearray()
        self._skipping = False

    def read_line(self, deadline: float) -> bytes | None:
        """The next complete line (without LF), or None when ``deadline`` (monotonic) passes."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                if self._skipping:
                    self._skipping = False
                    continue
                return line
            if len(self._buf) > MAX_LINE:
                self._buf.clear()
                self._skipping = True  # the rest of this line is dropped when its LF comes
            if time.monotonic() >= deadline:
                return None
            data = self.port.read(max(1, min(self.port.in_waiting, 1 << 20)))
            if data:
                self._buf += data


# -- the recorder's side ---------------------------------------------------------------------------


class RecorderLink:
    """Answers the dock on the recorder's end of the control link (a thread per link).

    ``identity``: ``device``, ``role``, ``firmware``, ``spool`` (the spool folder on the recorder).
    ``status()``: the agent's status; battery and spool use are added here.
    ``chain_clock(*, reference, device_time, reference_time, offset_ms, applied)``: chain a signed
    ``clock`` record (times are aware datetimes); may return a dict (e.g. the record's seq and hash),
    which is passed back to the dock.
    ``release(acks)``: free the files of the given acks — each already checked here: signed by a
    server key, ``stored``/``duplicate``, naming this device — and return the files freed.
    ``server_keys``: the server's ack-signing keys (``load_server_keys``).
    ``set_time(offset_ms) -> bool``: optional; steps the system clock by the offset and says whether it
    did. Without it the recorder never changes its clock and chains ``applied: false``.
    ``clock``: the recorder's clock (tests give a skewed one).
    """

    def __init__(
        self,
        port: str,
        *,
        identity: dict[str, Any],
        status: Callable[[], dict[str, Any]],
        chain_clock: Callable[..., Any],
        release: Callable[[list[dict[str, Any]]], list[str]],
        server_keys: Mapping[str, Ed25519PublicKey],
        set_time: Callable[[int], bool] | None = None,
        clock: Callable[[], datetime] | None = None,
        baud: int = 115200,
    ) -> None:
        missing = {"device", "role", "firmware", "spool"} - set(identity)
        if missing:
            raise ValueError(f"identity lacks {sorted(missing)}")
        self.port_name = port
        self.identity = dict(identity)
        self._status = status
        self._chain_clock = chain_clock
        self._release = release
        self.server_keys = dict(server_keys)
        self._set_time = set_time
        self._clock = clock or (lambda: datetime.now(UTC))
        self._baud = baud
        self._probes: dict[int, tuple[datetime, datetime]] = {}  # probe → (reference sent, device time)
        self._probe_ids = itertools.count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: Any = None

    def start(self) -> None:
        """Open the port and answer requests on a background thread."""
        self._port = _open_serial(self.port_name, self._baud)
        self._port.reset_input_buffer()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"recorder-link-{self.port_name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()

    def _serve(self) -> None:
        # The gadget's port outlives dockings: when the host goes away, reads fail; reopen and go on.
        while not self._stop.is_set():
            try:
                self._serve_port()
            except Exception as exc:
                log.info("control link %s: %s; reopening", self.port_name, exc)
            with contextlib.suppress(Exception):
                self._port.close()
            if self._stop.wait(1.0):
                return
            try:
                self._port = _open_serial(self.port_name, self._baud)
            except LinkError as exc:
                log.debug("%s", exc)

    def _serve_port(self) -> None:
        reader = _LineReader(self._port)
        while not self._stop.is_set():
            line = reader.read_line(time.monotonic() + 0.2)
            if line is None or not line.strip():
                continue
            answer = self.handle(line)
            if answer is not None:
                self._port.write(_encode(answer))
                self._port.flush()

    def handle(self, line: bytes) -> dict[str, Any] | None:
        """Answer one request line (None for lines that are no request: noise is not answered)."""
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(req, dict) or "op" not in req:
            return None
        rid = req.get("id")
        head = {"v": LINK_VERSION, "id": rid if isinstance(rid, int) else None}
        try:
            if req.get("v") != LINK_VERSION:
                raise LinkError(f"link version {req.get('v')!r} is not {LINK_VERSION}")
            op = req["op"]
            handler = {
                "identity": self._identity,
                "status": self._status_op,
                "clock-probe": self._clock_probe,
                "set-clock": self._set_clock,
                "records": self._records,
                "release": self._release_op,
            }.get(op)
            if handler is None:
                raise LinkError(f"unknown op {op!r}")
            return {**head, "ok": True, **handler(req)}
        except FieldproofError as exc:
            return {**head, "ok": False, "error": exc.diagnostics()}
        except (ValueError, TypeError, KeyError) as exc:
            return {**head, "ok": False, "error": f"bad request: {exc}"}
        except Exception as exc:  # a failing callback must not kill the link; the dock sees why
            log.exception("control link request %r failed", req.get("op"))
            return {**head, "ok": False, "error": f"{type(exc).__name__}: {exc}"}

    # -- operations --------------------------------------------------------------------------------

    def _identity(self, _req: dict[str, Any]) -> dict[str, Any]:
        return {**self.identity, "link": LINK_VERSION}

    def _status_op(self, _req: dict[str, Any]) -> dict[str, Any]:
        return {
            "battery": battery(),
            "spool": spool_usage(Path(self.identity["spool"])),
            "now": utc_timestamp(self._clock()),
            **self._status(),
        }

    def _clock_probe(self, req: dict[str, Any]) -> dict[str, Any]:
        # The recorder reads its own clock the moment the probe arrives; it never takes a device time
        # from the dock, so the clock record it later signs holds what it measured itself.
        now = self._clock()
        # Milliseconds, as records carry times: the signed offset is then exactly their difference.
        device_time = now.replace(microsecond=now.microsecond // 1000 * 1000)
        reference_time = parse_timestamp(str(req["reference_time"]))
        probe = next(self._probe_ids)
        self._probes[probe] = (reference_time, device_time)
        for old in sorted(self._probes)[:-_PROBES_KEPT]:
            del self._probes[old]
        return {
            "probe": probe,
            "device_time": utc_timestamp(device_time),
            "offset_ms": _ms(reference_time - device_time),
        }

    def _set_clock(self, req: dict[str, Any]) -> dict[str, Any]:
        probe = req["probe"]
        if probe not in self._probes:
            raise LinkError(f"no clock probe {probe!r} on this link; probe again")
        transit = req.get("transit_ms", 0)
        if not isinstance(transit, int) or not 0 <= transit <= MAX_TRANSIT_MS:
            raise LinkError(f"transit_ms must be an integer 0..{MAX_TRANSIT_MS}")
        reference = req.get("reference")
        if not isinstance(reference, str) or not 0 < len(reference) <= 128:
            raise LinkError("reference must name the dock's time source (1–128 characters)")
        sent, device_time = self._probes.pop(probe)
        # The dock's time was read when it sent the probe; half the round trip later it reached us.
        reference_time = sent + timedelta(milliseconds=transit)
        offset_ms = _ms(reference_time - device_time)
        applied = False
        if req.get("apply") is True and self._set_time is not None and offset_ms != 0:
            applied = bool(self._set_time(offset_ms))
        chained = self._chain_clock(
            reference=reference,
            device_time=device_time,
            reference_time=reference_time,
            offset_ms=offset_ms,
            applied=applied,
        )
        return {
            "reference": reference,
            "device_time": utc_timestamp(device_time),
            "reference_time": utc_timestamp(reference_time),
            "offset_ms": offset_ms,
            "applied": applied,
            "record": chained if isinstance(chained, dict) else None,
        }

    def _records(self, req: dict[str, Any]) -> dict[str, Any]:
        from_seq = req.get("from_seq", 0)
        limit = req.get("limit", MAX_RECORDS)
        if not isinstance(from_seq, int) or not isinstance(limit, int) or from_seq < 0:
            raise LinkError("from_seq and limit must be non-negative integers")
        limit = max(1, min(limit, MAX_RECORDS))
        journal = Path(self.identity["spool"]) / JOURNAL
        try:
            data = journal.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise LinkError(f"cannot read the journal: {exc.strerror}") from exc
        lines: list[str] = []
        more = False
        # Only complete lines: a record being written (no LF yet) is not a record.
        for raw in data[: data.rfind(b"\n") + 1].splitlines():
            seq = _line_seq(raw)
            if seq is None or seq < from_seq:
                continue
            if len(lines) >= limit:
                more = True
                break
            lines.append(raw.decode("utf-8", "surrogateescape"))
        return {"lines": lines, "more": more}

    def _release_op(self, req: dict[str, Any]) -> dict[str, Any]:
        from edge.sync.protocol import ProtocolError, parse_ack

        acks = req.get("acks")
        if not isinstance(acks, list) or len(acks) > MAX_RELEASE:
            raise LinkError(f"release needs a list of at most {MAX_RELEASE} acks")
        accepted: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        for ack in acks:
            seq = ack.get("seq") if isinstance(ack, dict) else None
            try:
                # Re-encode and verify: the server signed the JCS of the ack, which the object carries whole.
                ok = parse_ack(canonical(ack), self.server_keys)
            except (ProtocolError, ValueError, TypeError) as exc:
                refused.append({"seq": seq, "reason": str(exc)})
                continue
            if ok["status"] not in ("stored", "duplicate"):
                refused.append({"seq": seq, "reason": f"status {ok['status']}: the file is not durable"})
            elif ok.get("recorder") != self.identity["device"]:
                refused.append({"seq": seq, "reason": f"the ack is for {ok.get('recorder')}"})
            else:
                accepted.append(ok)
        released = list(self._release(accepted)) if accepted else []
        return {"released": released, "accepted": [a["seq"] for a in accepted], "refused": refused}


def _ms(delta: timedelta) -> int:
    return round(delta / timedelta(milliseconds=1))


def _line_seq(raw: bytes) -> int | None:
    try:
        seq = json.loads(raw)["record"]["seq"]
    except (ValueError, KeyError, TypeError):
        return None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


# -- the dock's side -------------------------------------------------------------------------------


class DockLink:
    """The dock's end of one control link: requests with a bounded wait each."""

    def __init__(self, port: str, *, baud: int = 115200, timeout: float = 5.0) -> None:
        self.port_name = port
        self.timeout = timeout
        self._port = _open_serial(port, baud)
        self._port.reset_input_buffer()
        self._reader = _LineReader(self._port)
        self._ids = itertools.count(int.from_bytes(os.urandom(2), "big"))
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the port."""
        with contextlib.suppress(Exception):
            self._port.close()

    def __enter__(self) -> DockLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, op: str, *, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Send one request and return the answer; LinkError on no answer or a refusal."""
        with self._lock:
            rid = next(self._ids)
            try:
                self._port.write(_encode({"v": LINK_VERSION, "id": rid, "op": op, **args}))
                self._port.flush()
            except Exception as exc:
                raise LinkError(f"cannot write to the control link {self.port_name}: {exc}") from exc
            deadline = time.monotonic() + (timeout or self.timeout)
            while True:
                try:
                    line = self._reader.read_line(deadline)
                except Exception as exc:
                    raise LinkError(f"the control link {self.port_name} failed: {exc}") from exc
                if line is None:
                    raise LinkError(
                        f"no answer to {op!r} on {self.port_name} within {timeout or self.timeout:g}s"
                    )
                try:
                    answer = json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    continue  # noise on the line, or the tail of an earlier answer
                if not isinstance(answer, dict) or answer.get("id") != rid:
                    continue  # a late answer to an earlier request that timed out
                if not answer.get("ok"):
                    raise LinkError(f"the recorder refused {op!r}: {answer.get('error', 'no reason given')}")
                return answer

    def identity(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The recorder's device id, role, firmware and spool path."""
        return self.request("identity", timeout=timeout)

    def status(self) -> dict[str, Any]:
        """Battery, spool use and the agent's status."""
        return self.request("status")

    def set_clock(
        self,
        *,
        reference: str,
        apply: bool = True,
        probes: int = 4,
        now: Callable[[], datetime] | None = None,
    ) -> dict[str, Any]:
        """Measure the recorder's clock against ours and have it chain a signed ``clock`` record.

        Several probes; the one with the shortest round trip wins (least queueing on the link), and
        half its round trip is the transit the recorder adds to our time. Returns the recorder's
        answer plus ``rtt_ms`` (the uncertainty of the offset is at most half of it).
        """
        clock = now or (lambda: datetime.now(UTC))
        best: tuple[float, int] | None = None
        for _ in range(max(1, probes)):
            t0 = time.monotonic()
            ans = self.request("clock-probe", reference_time=utc_timestamp(clock()))
            rtt = time.monotonic() - t0
            if best is None or rtt < best[0]:
                best = (rtt, ans["probe"])
        assert best is not None
        rtt, probe = best
        transit = min(MAX_TRANSIT_MS, round(rtt * 1000 / 2))
        out = self.request(
            "set-clock", probe=probe, transit_ms=transit, reference=reference, apply=apply, timeout=30
        )
        out["rtt_ms"] = round(rtt * 1000, 3)
        return out

    def records(self, from_seq: int = 0) -> list[bytes]:
        """The recorder's journal lines from ``from_seq`` on (complete lines, with LF)."""
        out: list[bytes] = []
        nxt = from_seq
        while True:
            ans = self.request("records", from_seq=nxt, limit=MAX_RECORDS, timeout=30)
            lines = [s.encode("utf-8", "surrogateescape") + b"\n" for s in ans.get("lines", [])]
            out += lines
            if not ans.get("more") or not lines:
                return out
            last = _line_seq(lines[-1])
            if last is None:
                return out
            nxt = last + 1

    def release(self, acks: list[dict[str, Any]]) -> dict[str, Any]:
        """Forward the server's signed acks; the recorder verifies them and frees the files it may."""
        released: list[str] = []
        accepted: list[int] = []
        refused: list[dict[str, Any]] = []
        for i in range(0, len(acks), MAX_RELEASE):
            ans = self.request("release", acks=acks[i : i + MAX_RELEASE], timeout=60)
            released += ans.get("released", [])
            accepted += ans.get("accepted", [])
            refused += ans.get("refused", [])
        return {"released": released, "accepted": accepted, "refused": refused}
