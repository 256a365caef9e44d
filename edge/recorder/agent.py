"""The recorder agent: ties capture, location, clock and the spool together, one chain for the device's life.

Order of durability for every segment (the reason this module exists): the pipeline fsyncs the file in
``tmp/``; the agent renames it into ``media/`` (and fsyncs the folder); only then is the segment record
sealed and appended (fsynced). A crash at any point leaves either a file recovery will chain as
``recovered``, or a chained segment — never a record without its file.

With ``[link]`` configured the agent also answers the dock on the serial control link
(``edge.recorder.link.RecorderLink``, docs/dock.md): identity, status, the clock exchange (the recorder
chains and signs the ``clock`` record itself) and erase-after-ack (``release``: files are freed only
on the server's signed acknowledgement, checked here against the fleet-certified server key).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody.canonical import canonical
from custody.digest import sha256_digest
from custody.signing import Ed25519Signer
from custody.spool import JOURNAL, TMP
from custody.timefmt import parse_timestamp, utc_timestamp
from edge.capture.api import SegmentFile, SegmentOpened, Stamp
from edge.config import RecorderConfig, load_policy
from edge.journal import SpoolWriter
from edge.journal.recovery import (
    Leftover,
    recover_tmp_segments,
    repair_journal,
    sidecar_path,
    unrecorded_media,
)
from edge.recorder.clock import ClockStatus, clock_status
from edge.recorder.context import RecordingContext
from edge.recorder.errors import RecorderError
from edge.recorder.link import LinkError, RecorderLink, load_server_keys
from fieldproof.durable import fsync_dir, make_dir, write_file

log = logging.getLogger(__name__)

FIRMWARE = "fieldproof-0.1.0"
_MB = 1 << 20
#: How often a control link port that is not there (yet) is tried again.
_LINK_RETRY_S = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


class RecorderAgent:
    """One recorder: open() recovers and boots, then start/stop/mark/set as the buttons would."""

    def __init__(
        self,
        *,
        config: RecorderConfig,
        config_label: str = "",
        realtime: bool = True,
        location: Any | None = None,
        disk_free: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.config_label = config_label
        self.realtime = realtime
        self.policy = load_policy(config.policy_path())
        self.signer = Ed25519Signer.from_files(config.signing.key, config.signing.cert)
        chain = config.signing.ca_chain
        self.ca_chain = chain.read_bytes() if chain.is_file() else b""
        self.root = config.spool.dir
        self.context = RecordingContext(officer=config.default_officer_id)
        if location is None:
            from edge.location import LocationService

            location = LocationService.from_config(config.location)
        self.location = location
        self._disk_free = disk_free or (lambda: shutil.disk_usage(self.root).free)
        self._lock = threading.RLock()
        self._stop_monitor = threading.Event()
        self._monitor: threading.Thread | None = None
        self.spool: SpoolWriter | None = None
        self.pipeline: Any = None
        self.recording_id: str | None = None
        self._sealed: list[tuple[int, str]] = []  # (seq, hash) of this recording's segment records
        self._files: dict[int, tuple[str, str, str]] = {}  # seq → (record hash, media file, digest)
        self.segments_sealed = 0
        self.recovered: list[Leftover] = []
        self.stop_reason = ""
        self.warnings: list[str] = []
        self.link: RecorderLink | None = None
        self._link_stop = threading.Event()
        self._link_opener: threading.Thread | None = None
        self._server_keys: dict[str, Ed25519PublicKey] | None = None

    # -- life cycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Recover what the last run left, chain a boot record, start location, capture and the link."""
        if self.config.link_port() is not None:
            # A link that would have to refuse every release is a config error now, before anything is
            # chained — not a surprise when the recorder is first docked.
            self.server_keys()
        self._recover_and_boot()
        self.location.start()
        from edge.capture.pipeline import CapturePipeline

        self.pipeline = CapturePipeline(
            video=self.config.video,
            audio=self.config.audio,
            pre_event=self.config.pre_event,
            overlay=self.config.overlay,
            segment_seconds=self.config.segment_seconds,
            work_dir=self.root / TMP,
            stamp=self._stamp,
            sink=self,
            realtime=self.realtime,
        )
        self.pipeline.start()
        self._monitor = threading.Thread(target=self._watch_space, name="recorder-space", daemon=True)
        self._monitor.start()
        self._start_link()

    def recover_only(self) -> list[Leftover]:
        """Chain what the last run left (with a boot record) and close, without capturing."""
        try:
            self._recover_and_boot()
        finally:
            if self.spool is not None:
                self.spool.close()
        return self.recovered

    def wait_media(self, seconds: float) -> None:
        """Let ``seconds`` of footage be captured (wall time live; media time in fast mode)."""
        if seconds > 0:
            self.pipeline.wait_media(seconds)

    def _recover_and_boot(self) -> None:
        make_dir(self.root, mode=0o755)
        torn = repair_journal(self.root)
        self.spool = SpoolWriter.create(
            self.root, signer=self.signer, device=self.config.device_id, ca_chain=self.ca_chain
        )
        boots, recorded = self._read_chain()
        leftovers = recover_tmp_segments(self.root)
        leftovers += unrecorded_media(self.root, recorded | {x.name for x in leftovers})
        clock = self._clock()
        reason = "crash-recovery" if (leftovers or torn) else "power-on"
        self.spool.append(
            "boot",
            {
                "boot": boots + 1,
                "firmware": FIRMWARE,
                "config": self.config_label[:128],
                "reason": reason,
                "clock": clock.as_record(),
            },
        )
        for left in leftovers:
            self._chain_recovered(left, clock)
        self.recovered = leftovers

    def close(self) -> None:
        """Seal any recording, stop the link, capture and location, close the journal."""
        try:
            if self.recording_id is not None:
                self.stop_recording()
        finally:
            self._stop_link()  # before the journal closes: the dock's requests append to it
            self._stop_monitor.set()
            if self._monitor is not None:
                self._monitor.join(timeout=5)
            try:
                if self.pipeline is not None:
                    self.pipeline.close()  # raises if capture failed; the journal still closes below
            finally:
                self.location.stop()
                if self.spool is not None:
                    self.spool.close()

    # -- the control link to the dock -----------------------------------------------------------------

    def server_keys(self) -> dict[str, Ed25519PublicKey]:
        """The server's ack-signing key from ``[signing] server_cert``, vouched for by ``[signing] ca_chain``.

        Loaded once. RecorderError when the certificate is missing, unreadable, or not the fleet's
        server-signing certificate: acks checked against a planted key would free evidence.
        """
        if self._server_keys is None:
            signing = self.config.signing
            try:
                self._server_keys = load_server_keys(signing.server_cert, ca_chain=signing.ca_chain)
            except LinkError as exc:
                raise RecorderError(
                    f"[signing] server_cert: {exc.diagnostics()}. Without it no acknowledgement can be "
                    "checked and no footage freed; re-enrol the device or fix recorder.toml"
                    + (", or set [link] enabled = false" if self.config.link_port() is not None else "")
                ) from exc
        return self._server_keys

    def _start_link(self) -> None:
        port = self.config.link_port()
        if port is None or self.config.link is None:
            return
        self.link = RecorderLink(
            str(port),
            identity={
                "device": self.config.device_id,
                "role": "recorder",
                "firmware": FIRMWARE,
                "spool": str(self.root),
            },
            status=self.status,
            chain_clock=self.chain_clock,
            release=self.release,
            server_keys=self.server_keys(),
            # The service runs with ProtectClock=yes and no CAP_SYS_TIME, and there is no privileged
            # stepper: the recorder never steps its own clock. The dock's measurement is still chained,
            # signed, with applied: false (docs/recorder.md, "Clock").
            set_time=None,
            baud=self.config.link.baud,
        )
        self._link_stop.clear()
        try:
            self.link.start()
        except (LinkError, OSError) as exc:
            # The gadget's tty may be set up after this service starts; keep trying rather than give up.
            log.warning("%s; trying again every %gs", exc, _LINK_RETRY_S)
            self._link_opener = threading.Thread(
                target=self._open_link_later, name="recorder-link-open", daemon=True
            )
            self._link_opener.start()
        else:
            log.info("control link on %s", port)

    def _open_link_later(self) -> None:
        assert self.link is not None
        while not self._link_stop.wait(_LINK_RETRY_S):
            try:
                self.link.start()
            except (LinkError, OSError) as exc:
                log.debug("%s", exc)
                continue
            log.info("control link on %s", self.link.port_name)
            return

    def _stop_link(self) -> None:
        self._link_stop.set()
        if self._link_opener is not None:
            self._link_opener.join(timeout=10)
            self._link_opener = None
        if self.link is not None:
            self.link.stop()
            self.link = None

    def _read_chain(self) -> tuple[int, set[str]]:
        # One pass over the journal: how many boots so far, and which media files are chained.
        boots, files = 0, set()
        try:
            lines = (self.root / JOURNAL).read_bytes().splitlines()
        except FileNotFoundError:
            return 0, set()
        for line in lines:
            try:
                record = json.loads(line)["record"]
            except (ValueError, KeyError, TypeError):
                continue
            if record.get("kind") == "boot":
                boots += 1
            elif record.get("kind") in ("segment", "recovered"):
                body = record["body"]
                files.add(body["file"])
                self._files[record["seq"]] = (sha256_digest(canonical(record)), body["file"], body["digest"])
            elif record.get("kind") == "release":
                for t in record["body"]["targets"]:
                    self._files.pop(t["seq"], None)
        return boots, files

    # -- the buttons --------------------------------------------------------------------------------

    def start_recording(self) -> str:
        """Start a recording (the pre-event ring becomes its start); returns the recording id."""
        with self._lock:
            if self.recording_id is not None:
                raise RecorderError(f"already recording ({self.recording_id})")
            free = self._disk_free()
            if free < self.config.spool.min_free_mb * _MB:
                raise RecorderError(
                    f"not enough space to start: {free // _MB} MB free, {self.config.spool.min_free_mb} MB needed; "
                    "dock the recorder so its footage can be uploaded and freed"
                )
            self.recording_id = uuid.uuid4().hex
            self._sealed = []
            self.stop_reason = ""
        self.pipeline.start_recording(self.recording_id)
        return self.recording_id

    def stop_recording(self, *, after: float | None = None) -> None:
        """Stop (now, or after ``after`` seconds of footage) and seal the last segment; returns once chained."""
        if self.recording_id is None:
            raise RecorderError("not recording")
        self.pipeline.stop_recording(after=after)
        with self._lock:
            self.recording_id = None

    def mark(self, label: str, note: str = "") -> dict[str, Any]:
        """Chain a marker (a label from the recording policy) at this moment."""
        codes = {m.code for m in self.policy.markers}
        if label not in codes:
            raise RecorderError(
                f"marker {label!r} is not in the recording policy; known: {', '.join(sorted(codes))}"
            )
        now = _now()
        with self._lock:
            assert self.spool is not None
            sealed = self.spool.append(
                "marker",
                {
                    "recording": self.recording_id or "",
                    "at": utc_timestamp(now),
                    "label": label,
                    "note": note[:500],
                    "officer": self.context.officer,
                    "location": self.location.location_for(now - timedelta(seconds=1), now),
                },
            )
        return {"seq": sealed.record["seq"], "hash": sealed.hash}

    def set_context(self, **changes: str) -> RecordingContext:
        """Change what the following segments say; earlier segments of this recording get a signed annotation."""
        with self._lock:
            new = self.context.updated(self.policy, **changes)
            annotate = {k: v for k, v in changes.items() if k != "officer" and getattr(self.context, k) != v}
            self.context = new
            if annotate and self._sealed:
                assert self.spool is not None
                self.spool.append(
                    "annotation",
                    {
                        "targets": [
                            {"device": self.config.device_id, "seq": s, "hash": h} for s, h in self._sealed
                        ],
                        "set": annotate,
                        "by": new.officer or self.config.device_id,
                        "reason": "set on the recorder during the recording",
                    },
                )
            return new

    def status(self) -> dict[str, Any]:
        """What the recorder is doing, for the control interface and the dock."""
        clock = self._clock()
        fix = self.location.current()
        free = self._disk_free()
        with self._lock:
            return {
                "device": self.config.device_id,
                "recording": self.recording_id,
                "context": self.context.as_record(),
                "segments_sealed": self.segments_sealed,
                "next_seq": self.spool.chain.head.next_seq if self.spool else None,
                "free_mb": free // _MB,
                "low_space": free < self.config.spool.min_free_mb * _MB,
                "clock": {**clock.as_record(), "trusted": clock.trusted},
                "fix": fix.to_record() if fix is not None else None,
                "stop_reason": self.stop_reason,
                "recovered": [x.name for x in self.recovered],
                "warnings": list(self.warnings),
            }

    # -- the dock's requests over the serial link ------------------------------------------------------

    def chain_clock(
        self,
        *,
        reference: str,
        device_time: datetime,
        reference_time: datetime,
        offset_ms: int,
        applied: bool,
    ) -> dict[str, Any]:
        """Chain the dock's clock correction as a signed ``clock`` record (the recorder signs, not the dock)."""
        with self._lock:
            assert self.spool is not None
            sealed = self.spool.append(
                "clock",
                {
                    "reference": reference[:128],
                    "device_time": utc_timestamp(device_time),
                    "reference_time": utc_timestamp(reference_time),
                    "offset_ms": int(offset_ms),
                    "applied": applied,
                },
            )
        return {"seq": sealed.record["seq"], "hash": sealed.hash}

    def release(self, acks: list[dict[str, Any]]) -> list[str]:
        """Free the files of segments the server acknowledged as durable; returns the files freed.

        Each ack must carry the server's valid signature, name this device and a record this chain holds
        with the same hash. The ``release`` record is made durable first, then the files are removed:
        a crash in between leaves files that are freed later, never a file gone without its release.
        """
        from edge.sync.protocol import ProtocolError, parse_ack

        keys = self.server_keys()
        targets, accepted = [], []
        with self._lock:
            for ack in acks:
                try:
                    ok = parse_ack(canonical(ack), keys)
                except (ProtocolError, ValueError, TypeError):
                    continue  # unsigned, forged or malformed: keep the file
                entry = self._files.get(ok.get("seq", -1))
                if (
                    ok["status"] not in ("stored", "duplicate")
                    or ok.get("recorder") != self.config.device_id
                    or entry is None
                    or entry[0] != ok.get("hash")
                    or not (self.root / "media" / entry[1]).exists()
                ):
                    continue
                targets.append({"seq": ok["seq"], "hash": entry[0], "file": entry[1], "digest": entry[2]})
                accepted.append(ok)
            if not targets:
                return []
            assert self.spool is not None
            self.spool.append("release", {"targets": targets, "acks": accepted})
        freed = []
        for t in targets:
            path = self.root / "media" / t["file"]
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
            freed.append(t["file"])
        return freed

    # -- the pipeline's sink -----------------------------------------------------------------------

    def segment_opened(self, event: SegmentOpened) -> None:
        """Keep the segment's context beside it, durably, so a crash can still chain it fully."""
        with self._lock:
            side = {
                "recording": event.recording,
                "index": event.index,
                "start": utc_timestamp(event.start),
                "context": self.context.as_record(),
                "clock": self._clock().as_record(),
            }
        write_file(sidecar_path(event.path), json.dumps(side, ensure_ascii=False).encode("utf-8"))

    def segment_sealed(self, segment: SegmentFile) -> None:
        """Move the sealed file into media/ and chain its record (file first, then record)."""
        name = f"{segment.recording}/{segment.index:04d}.mp4"
        clock = self._clock()
        location = self.location.location_for(segment.start, segment.end)
        with self._lock:
            assert self.spool is not None
            digest, size = self.spool.store_media(segment.path, name)
            sealed = self.spool.append(
                "segment",
                {
                    "recording": segment.recording,
                    "index": segment.index,
                    "file": name,
                    "digest": digest,
                    "size": size,
                    "media": segment.media,
                    "start": utc_timestamp(segment.start),
                    "end": utc_timestamp(segment.end),
                    "clock": clock.as_record(),
                    "location": location,
                    "pre_event_s": segment.pre_event_s,
                    **self.context.as_record(),
                },
            )
            sidecar_path(segment.path).unlink(missing_ok=True)
            self._sealed.append((sealed.record["seq"], sealed.hash))
            self._files[sealed.record["seq"]] = (sealed.hash, name, digest)
            self.segments_sealed += 1

    # -- helpers ----------------------------------------------------------------------------------------

    def _clock(self) -> ClockStatus:
        return clock_status(self.config, self.location)

    def _stamp(self) -> Stamp:
        fix = self.location.current()
        return Stamp(
            device=self.config.device_id,
            officer=self.context.officer,
            lat_e7=fix.lat_e7 if fix else None,
            lon_e7=fix.lon_e7 if fix else None,
            clock_trusted=self._clock().trusted,
        )

    def _chain_recovered(self, left: Leftover, clock: ClockStatus) -> None:
        from edge.recorder.probe import probe_media

        assert self.spool is not None
        path = self.root / "media" / left.name
        media, seconds = probe_media(path)
        ctx = left.context.get("context", {}) if isinstance(left.context, dict) else {}
        try:
            start = parse_timestamp(left.context["start"])
        except (KeyError, ValueError, TypeError):
            start = datetime.fromtimestamp(path.stat().st_mtime, UTC) - timedelta(seconds=seconds)
        digest, size = self._hash(path)
        body = {
            "recording": left.recording,
            "index": left.index,
            "file": left.name,
            "digest": digest,
            "size": size,
            "media": media,
            "start": utc_timestamp(start),
            "end": utc_timestamp(start + timedelta(seconds=seconds)),
            "clock": left.context.get("clock", clock.as_record()),
            "location": {
                "fix": False,
                "reason": "recovered after a crash: this segment's fixes were held in memory",
            },
            "pre_event_s": 0,
            **{k: str(ctx.get(k, "")) for k in ("officer", "case", "subject", "matter", "scene", "proof")},
            "recovery": {"reason": left.reason, "original_size": left.original_size, "trimmed": left.trimmed},
        }
        sealed = self.spool.append("recovered", body)
        self._files[sealed.record["seq"]] = (sealed.hash, left.name, digest)
        sidecar = self.root / TMP / f"{left.recording}-{left.index:04d}.json"
        sidecar.unlink(missing_ok=True)

    @staticmethod
    def _hash(path: Path) -> tuple[str, int]:
        from custody.digest import file_digest

        return file_digest(path)

    def _watch_space(self) -> None:
        # Below the reserve, footage stops cleanly so the records closing it can still be written.
        while not self._stop_monitor.wait(0.25):
            free = self._disk_free()
            low = free < self.config.spool.min_free_mb * _MB
            if low and "low space" not in self.warnings:
                self.warnings.append("low space")
            elif not low and "low space" in self.warnings:
                self.warnings.remove("low space")
            if self.recording_id is not None and free < self.config.spool.reserve_mb * _MB:
                self._stop_for_space(free)

    def _stop_for_space(self, free: int) -> None:
        recording = self.recording_id
        reason = (
            f"recording stopped: {free // _MB} MB free on the spool, below the reserve of "
            f"{self.config.spool.reserve_mb} MB"
        )
        self.stop_reason = reason  # known before the recording ends, so whoever waits on it sees why
        try:
            self.stop_recording()
        except RecorderError:
            self.stop_reason = ""
            return  # stopped meanwhile by the button
        with self._lock:
            assert self.spool is not None
            self.spool.append(
                "gap",
                {
                    "recording": recording or "",
                    "index": None,
                    "reason": reason,
                    "from": utc_timestamp(_now()),
                    "to": None,
                },
            )
