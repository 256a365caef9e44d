"""Docks' retained state messages (``P/dev/<dock>/state``, docs/sync-protocol.md §1a): checked, then stored.

A state message is untrusted input. The broker's ACL (``fieldproof provision broker-config``) lets every
enrolled device read and write ``P/dev/<its CN>/#``: a dock can publish only its own state topic, but a
*recorder* holding a broker certificate could publish ``P/dev/<recorder>/state`` too, and any device can
write any JSON there. So: a size limit; the JSON object's members typed and bounded; the topic's device
must be the dock the message names, and enrolled as a dock; recorders named in it must be enrolled as
recorders (others are left out). A message that fails is logged and nothing of it is stored.

Every ingest worker subscribes to the state topics directly (not through the shared subscription): the
state is retained, so each worker gets it on (re)connecting. Storing is idempotent — the newest wins
(the dock row by (``conn``, ``ended``, ``at``), each recorder's status by its ``read_at``) — so the
same message stored twice, or by two workers, or an old one late, changes nothing. Not custody
events: a dock's report of its recorders is not evidence, and a retained message is seen again on
every reconnect.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from custody.record import DEVICE_ID_RE
from server.db import transaction, utc_now
from server.devices.models import DockState, RecorderStatus
from server.devices.registry import DeviceRegistry

log = logging.getLogger(__name__)

#: Largest state message accepted (bytes).
MAX_STATE_MESSAGE: Final = 16 * 1024
#: Recorders one state message may report.
MAX_STATE_RECORDERS: Final = 32
_TIMESTAMP: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_BROKER: Final = re.compile(r"[A-Za-z0-9.:\[\]_-]{1,128}")
_BIG: Final = 2**62
#: The bounds of each integer member of a recorder's status (None always allowed).
_INTS: Final = {
    "battery_pct": (0, 100),
    "spool_used_bytes": (0, _BIG),
    "spool_total_bytes": (0, _BIG),
    "files_waiting": (0, 10_000_000),
    "clock_offset_ms": (-_BIG, _BIG),
}


class StateRejectedError(ValueError):
    """A state message that is not stored; the text says why."""


@dataclass(frozen=True)
class RecorderReport:
    """One recorder's status as the dock read it."""

    recorder: str
    read_at: datetime
    values: dict[str, int | bool | None]


@dataclass(frozen=True)
class DockReport:
    """A state message that passed every check."""

    dock: str
    online: bool
    at: datetime
    conn: datetime
    ended: bool
    broker: str | None
    recorders: list[RecorderReport]


def _time(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise StateRejectedError(f"{what} is not a custody timestamp (YYYY-MM-DDTHH:MM:SS.mmmZ)")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise StateRejectedError(f"{what} is not a valid time") from None


def _recorder(entry: Any, index: int) -> RecorderReport:
    if not isinstance(entry, dict):
        raise StateRejectedError(f"recorders[{index}] is not an object")
    rec = entry.get("recorder")
    if not isinstance(rec, str) or not DEVICE_ID_RE.fullmatch(rec):
        raise StateRejectedError(f"recorders[{index}].recorder is not a device id")
    values: dict[str, int | bool | None] = {}
    for name, (low, high) in _INTS.items():
        v = entry.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high):
            raise StateRejectedError(f"recorders[{index}].{name} is not an integer in {low}..{high}")
        values[name] = v
    charging = entry.get("charging")
    if charging is not None and not isinstance(charging, bool):
        raise StateRejectedError(f"recorders[{index}].charging is not true, false or null")
    values["charging"] = charging
    used, total = values["spool_used_bytes"], values["spool_total_bytes"]
    if isinstance(used, int) and isinstance(total, int) and used > total:
        raise StateRejectedError(f"recorders[{index}]: spool_used_bytes exceeds spool_total_bytes")
    return RecorderReport(rec, _time(entry.get("read_at"), f"recorders[{index}].read_at"), values)


def parse_state(topic_dock: str, payload: bytes, *, received: datetime) -> DockReport:
    """Check a state message from ``P/dev/<topic_dock>/state``; StateRejectedError says what is wrong.

    Unknown members are ignored (readers ignore members they do not know, §1a); known ones are typed
    and bounded. A message without ``at`` is an offline will of a dock from before §1a: it is dated
    when it was received."""
    if len(payload) > MAX_STATE_MESSAGE:
        raise StateRejectedError(f"too-large: {len(payload)} bytes (limit {MAX_STATE_MESSAGE})")
    try:
        msg = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise StateRejectedError("malformed: not UTF-8 JSON") from None
    if not isinstance(msg, dict):
        raise StateRejectedError("malformed: not a JSON object")
    dock = msg.get("dock")
    if not isinstance(dock, str) or not DEVICE_ID_RE.fullmatch(dock):
        raise StateRejectedError("malformed: dock is not a device id")
    if dock != topic_dock:
        raise StateRejectedError(f"forged: the message names dock {dock!r} on {topic_dock!r}'s topic")
    online = msg.get("online")
    if not isinstance(online, bool):
        raise StateRejectedError("malformed: online is not true or false")
    if "at" in msg:
        at = _time(msg["at"], "at")
    elif not online:
        at = received
    else:
        raise StateRejectedError("malformed: an online state without at")
    conn = _time(msg["conn"], "conn") if "conn" in msg else at
    ended = msg.get("will", False)
    if not isinstance(ended, bool):
        raise StateRejectedError("malformed: will is not true or false")
    if ended and online:
        raise StateRejectedError("malformed: a will that says online")
    broker = msg.get("broker")
    if broker is not None and (not isinstance(broker, str) or not _BROKER.fullmatch(broker)):
        raise StateRejectedError("malformed: broker is not host:port")
    entries = msg.get("recorders", [])
    if not isinstance(entries, list) or len(entries) > MAX_STATE_RECORDERS:
        raise StateRejectedError(f"malformed: recorders is not a list of at most {MAX_STATE_RECORDERS}")
    recorders = [_recorder(e, i) for i, e in enumerate(entries)]
    if len({r.recorder for r in recorders}) != len(recorders):
        raise StateRejectedError("malformed: a recorder is reported twice")
    return DockReport(dock, online, at, conn, ended or (not online and "at" not in msg), broker, recorders)


def store_state(*, session: Session, report: DockReport, received: datetime) -> int:
    """Store what is newer than what is held; returns how many rows changed (0: nothing was newer)."""
    changed = 0
    held = session.get(DockState, report.dock, with_for_update=True)
    key = (report.conn, report.ended, report.at)
    if held is None:
        session.add(
            DockState(
                dock=report.dock,
                online=report.online,
                at=report.at,
                conn=report.conn,
                ended=report.ended,
                broker=report.broker,
                received_at=received,
            )
        )
        changed += 1
    elif key > (held.conn, held.ended, held.at):
        held.online, held.at, held.conn, held.ended = report.online, report.at, report.conn, report.ended
        held.broker, held.received_at = report.broker, received
        changed += 1
    for r in report.recorders:
        row = session.get(RecorderStatus, r.recorder, with_for_update=True)
        if row is not None and row.read_at >= r.read_at:
            continue
        if row is None:
            row = RecorderStatus(recorder=r.recorder)
            session.add(row)
        row.dock, row.read_at, row.received_at = report.dock, r.read_at, received
        for name, value in r.values.items():
            setattr(row, name, value)
        changed += 1
    return changed


class StateHandler:
    """Checks and stores state messages for the ingest worker; never raises."""

    def __init__(self, *, prefix: str, factory: sessionmaker[Session], registry: DeviceRegistry) -> None:
        self.prefix = prefix
        self.factory = factory
        self.registry = registry
        self.stored = 0
        self.rejected = 0

    def topic_dock(self, topic: str) -> str | None:
        """The dock of a ``P/dev/<dock>/state`` topic, or None when ``topic`` is not one."""
        head, tail = f"{self.prefix}/dev/", "/state"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        return topic[len(head) : -len(tail)]

    def handle(self, topic: str, payload: bytes) -> bool:
        """Check and store one state message; True when it was accepted (stored or already held)."""
        try:
            self._handle(topic, payload)
        except StateRejectedError as exc:
            self.rejected += 1
            log.warning("state message on %r rejected, nothing stored: %s", topic[:200], exc)
            return False
        except Exception:  # one bad message must never stop ingest
            self.rejected += 1
            log.exception("state message on %r could not be stored", topic[:200])
            return False
        return True

    def _handle(self, topic: str, payload: bytes) -> None:
        dock = self.topic_dock(topic)
        if dock is None or not DEVICE_ID_RE.fullmatch(dock):
            raise StateRejectedError("malformed: not a dock's state topic")
        received = utc_now()
        report = parse_state(dock, payload, received=received)
        if self.registry.role(dock) != "dock":
            self.registry.rescan_roles()  # enrolled since the last look?
            if self.registry.role(dock) != "dock":
                raise StateRejectedError(f"forged: {dock} is not enrolled as a dock in this fleet")
        kept = [r for r in report.recorders if self.registry.role(r.recorder) == "recorder"]
        if len(kept) != len(report.recorders):
            left = sorted({r.recorder for r in report.recorders} - {r.recorder for r in kept})
            log.warning("state of %s: left out %s (not enrolled as recorders)", dock, ", ".join(left))
            report = DockReport(**{**report.__dict__, "recorders": kept})
        for attempt in range(3):
            try:
                with transaction(self.factory) as s:
                    if store_state(session=s, report=report, received=received):
                        self.stored += 1
                return
            except IntegrityError:  # another worker inserted the same dock or recorder first
                if attempt == 2:
                    raise


def dock_states(session: Session) -> dict[str, DockState]:
    """Every dock's stored state, by dock."""
    return {d.dock: d for d in session.scalars(select(DockState))}


def recorder_statuses(session: Session) -> dict[str, RecorderStatus]:
    """Every recorder's last reported status, by recorder."""
    return {r.recorder: r for r in session.scalars(select(RecorderStatus))}
