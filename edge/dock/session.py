"""One docked recorder, from docking to undocking: check, set the clock, take records, forward acks.

Order, and why:

1. The chain is verified locally on its own thread (hashing every file takes a while on a Pi); its
   findings are logged and kept in the outbox, and the records are sent regardless — the server judges.
2. Over the control link, the recorder's clock is measured against the dock's and the recorder chains a
   signed ``clock`` record (the recorder signs; the dock only measures).
3. Every complete journal line is taken into the outbox (durably) before anything is published; the
   sync client sends it. Records chained while docked (the clock record, releases) come over the link.
4. The server's ``stored``/``duplicate`` acks are forwarded to the recorder, which checks each signature
   itself and frees the files; its ``release`` record is then taken and sent like any other.
5. The recorder's status (battery, spool use) is read over the link at docking, after files were freed,
   and every ``STATUS_INTERVAL_S``; the sync client puts it in the dock's retained state (protocol §1a).
   It is what the dock measured, not evidence: nothing is chained or signed for it.

Undocking at any point loses nothing: the outbox holds the records and the acks; files not yet sent
wait for the next docking, and acks not yet forwarded are forwarded then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from custody.spool import JOURNAL, MANIFEST, Spool
from custody.timefmt import utc_timestamp
from custody.trust import TrustStore
from edge.dock.intake import describe, journal_items, signing_certs, verify_locally
from edge.recorder.link import DockLink, LinkError
from edge.sync.outbox import Outbox

log = logging.getLogger(__name__)

#: How often a docked recorder's status is read again over the link (seconds).
STATUS_INTERVAL_S: Final = 30.0


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class DockingSession:
    """The dock's work for one docked spool (run on its own thread by the agent, or inline by sync-once)."""

    def __init__(
        self,
        *,
        root: Path,
        outbox: Outbox,
        wake: Callable[..., None],
        trust: TrustStore | None,
        link: Callable[[str], DockLink | None] | None = None,
        reference: str = "dock/ntp",
        apply_clock: bool = False,
        max_set_offset_ms: int = 2000,
        poll_s: float = 1.0,
        clock: Callable[[], datetime] | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.root = root
        self.spool = Spool.open(root)
        self.device = self.spool.device
        self.outbox = outbox
        self._wake = wake
        self.trust = trust
        self._link_for = link
        self.reference = reference
        self.apply_clock = apply_clock
        self.max_set_offset_ms = max_set_offset_ms
        self.poll_s = poll_s
        self._now = clock or (lambda: datetime.now(UTC))
        self.event = threading.Event()  # set when there may be something to do (an ack came in)
        self.report: dict[str, Any] | None = None
        self.clock: dict[str, Any] | None = None
        self.released: list[str] = []
        self.refused: list[dict[str, Any]] = []
        self.unsendable: list[str] = []
        self.forks: list[str] = []
        self._verifier: threading.Thread | None = None
        self._journal_size = -1
        self._certs: dict[str, str] | None = None
        self._forwarded: set[int] = set()
        self._clock_tried = False
        self._on_status = on_status
        self.status: dict[str, Any] | None = None  # the recorder's last status, as the state carries it
        self._status_read = 0.0  # time.monotonic() of the last read

    # -- life cycle --------------------------------------------------------------------------------

    def docked(self) -> bool:
        """True while the spool is still there (a vanished mount means the recorder was undocked)."""
        try:
            return (self.root / MANIFEST).is_file()
        except OSError:
            return False

    def begin(self) -> None:
        """Verify (in the background), set the clock, take the records, and start the sync."""
        self._verifier = threading.Thread(target=self._verify, name=f"verify-{self.device}", daemon=True)
        self._verifier.start()
        self.set_clock()
        self.take_records()
        self.read_status()
        self._wake(self.device, docked=True)

    def run(self, stop: threading.Event) -> None:
        """Work until undocked or ``stop``."""
        self.begin()
        while not stop.is_set() and self.docked():
            self.step()
            self.event.wait(self.poll_s)
            self.event.clear()
        log.info("%s: %s", self.device, "undocked" if not self.docked() else "stopped")

    def step(self) -> bool:
        """Forward acks, take new records; True when something changed."""
        if self.clock is None and not self._clock_tried and self.link() is not None:
            self.set_clock()  # the link answered only after the spool was mounted
        freed = self.forward_acks()
        changed = self.take_records() or freed
        if freed or time.monotonic() - self._status_read >= STATUS_INTERVAL_S:
            self.read_status()
        return changed

    def wait_verified(self, timeout: float | None = None) -> None:
        """Block until local verification has finished."""
        if self._verifier is not None:
            self._verifier.join(timeout)

    def _verify(self) -> None:
        try:
            report = verify_locally(self.spool, self.trust)
        except Exception as exc:  # a broken spool must not stop its records from going to the server
            log.exception("%s: local verification failed", self.device)
            report = {"verified": False, "note": f"verification could not run: {exc}"}
        self.report = report
        level = logging.INFO if report.get("all_sound") else logging.WARNING
        log.log(level, "%s: %s", self.device, describe(report))
        try:
            self.outbox.note_docking(recorder=self.device, spool=str(self.root), report=report)
        except Exception:
            log.exception("%s: cannot keep the verification report", self.device)

    # -- the control link --------------------------------------------------------------------------

    def link(self) -> DockLink | None:
        """The recorder's control link, when one answered with this device id."""
        return self._link_for(self.device) if self._link_for is not None else None

    def set_clock(self) -> dict[str, Any] | None:
        """Measure the recorder's clock; the recorder chains the signed ``clock`` record."""
        link = self.link()
        if link is None:
            log.info("%s: no control link yet: clock not set", self.device)
            return None
        self._clock_tried = True
        try:
            result = link.set_clock(reference=self.reference, apply=self.apply_clock, now=self._now)
        except LinkError as exc:
            log.warning("%s: clock not set: %s", self.device, exc)
            return None
        self.clock = result
        offset = result.get("offset_ms", 0)
        if abs(offset) > self.max_set_offset_ms:
            log.warning(
                "%s: clock anomaly: the recorder was %+d ms off (limit %d ms); chained as a clock record",
                self.device,
                offset,
                self.max_set_offset_ms,
            )
        else:
            log.info("%s: clock offset %+d ms (round trip %.1f ms)", self.device, offset, result["rtt_ms"])
        return result

    def read_status(self) -> dict[str, Any] | None:
        """Read the recorder's status over the link and hand it to the sync client (protocol §1a)."""
        link = self.link()
        if link is None:
            return None
        self._status_read = time.monotonic()
        try:
            answer = link.status()
        except LinkError as exc:
            log.warning("%s: cannot read the recorder's status: %s", self.device, exc)
            return None
        battery = answer.get("battery")
        spool = answer.get("spool")
        battery = battery if isinstance(battery, dict) else {}
        spool = spool if isinstance(spool, dict) else {}
        pct = _int_or_none(battery.get("capacity_pct"))
        offset = self.clock.get("offset_ms") if self.clock else None
        waiting = sum(1 for r in self.outbox.rows(self.device) if r.has_file and not r.released)
        status: dict[str, Any] = {
            "recorder": self.device,
            "read_at": utc_timestamp(self._now()),
            "battery_pct": pct if pct is not None and pct <= 100 else None,
            "charging": battery.get("status") == "Charging" if battery.get("status") else None,
            "spool_used_bytes": _int_or_none(spool.get("used_bytes")),
            "spool_total_bytes": _int_or_none(spool.get("total_bytes")),
            "files_waiting": waiting,
            "clock_offset_ms": offset if isinstance(offset, int) and not isinstance(offset, bool) else None,
        }
        self.status = status
        if self._on_status is not None:
            self._on_status(status)
        return status

    # -- records ------------------------------------------------------------------------------------

    def take_records(self) -> bool:
        """Take new journal lines (from the mount, and over the link) into the outbox; True if any."""
        lines: list[bytes] = []
        try:
            size = (self.root / JOURNAL).stat().st_size
            if size != self._journal_size:
                lines = self.spool.read_journal()
                self._journal_size = size
        except OSError as exc:
            log.info("%s: journal not readable now (%s)", self.device, exc)
        link = self.link()
        if link is not None:
            try:
                lines += link.records(from_seq=self.outbox.next_seq(self.device))
            except LinkError as exc:
                log.warning("%s: cannot read new records over the link: %s", self.device, exc)
        if not lines:
            return False
        if self._certs is None:
            self._certs = signing_certs(self.spool)
        intake = journal_items(self.spool, lines, certs=self._certs)
        for text in intake.unsendable:
            if text not in self.unsendable:
                self.unsendable.append(text)
                log.warning("%s: %s", self.device, text)
        result = self.outbox.enqueue(intake.items)
        for f in result.forks:
            text = f"fork at seq {f.seq}: held {f.held_hash}, offered {f.offered_hash}; refused"
            if text not in self.forks:
                self.forks.append(text)
                log.error("%s: %s", self.device, text)
        if result.added:
            log.info("%s: %d new records in the outbox", self.device, result.added)
            self._wake(self.device)
        return result.added > 0

    # -- erase-after-ack -----------------------------------------------------------------------------

    def forward_acks(self) -> bool:
        """Give the recorder the server's signed acks of durable files; True when it freed any."""
        link = self.link()
        if link is None:
            return False
        rows = [r for r in self.outbox.unreleased(self.device, limit=256) if r.seq not in self._forwarded]
        if not rows:
            return False
        acks = [a for a in (r.ack_json() for r in rows) if a is not None]
        try:
            answer = link.release(acks)
        except LinkError as exc:
            log.warning("%s: cannot forward acks: %s", self.device, exc)
            return False
        accepted = set(answer["accepted"])
        self._forwarded |= {r.seq for r in rows}
        self.outbox.mark_released(self.device, sorted(accepted & {r.seq for r in rows}))
        self.released += answer["released"]
        for r in answer["refused"]:
            self.refused.append(r)
            log.error(
                "%s: the recorder refused the ack of seq %s: %s", self.device, r.get("seq"), r.get("reason")
            )
        if answer["released"]:
            log.info("%s: freed %d files after the server's ack", self.device, len(answer["released"]))
        return bool(answer["released"])

    def outstanding(self) -> bool:
        """True while records await the server's last word or acks await forwarding this session."""
        if self.outbox.open_rows(self.device, limit=1):
            return True
        if self.link() is None:
            return False
        return any(r.seq not in self._forwarded for r in self.outbox.unreleased(self.device, limit=256))

    def summary(self) -> dict[str, Any]:
        """What happened, for sync-once and the status."""
        rows = self.outbox.rows(self.device)
        rejected = [{"seq": r.seq, "reason": r.last_error} for r in rows if r.state == "rejected"]
        return {
            "recorder": self.device,
            "spool": str(self.root),
            "states": self.outbox.summary(self.device),
            "rejected": rejected,
            "forks": self.forks,
            "unsendable": self.unsendable,
            "verification": self.report,
            "clock": self.clock,
            "status": self.status,
            "released": self.released,
            "release_refused": self.refused,
        }
