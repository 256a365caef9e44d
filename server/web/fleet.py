"""The fleet as the server knows it: the CA's inventory (certificates, revocations) joined with what
devices' records said (last seen, firmware and config of the last boot, the last clock offset), what
docks' state messages said (online; each recorder's battery and spool use as read over its control link,
docs/sync-protocol.md §1a) and to whom each recorder is issued (配发)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.canonical import parse
from provisioning import inventory
from server.devices.assignments import current_assignments
from server.devices.models import Device
from server.ingest.models import Record
from server.ingest.state import dock_states, recorder_statuses


@dataclass(frozen=True)
class FleetRow:
    """One recorder or dock."""

    device: str
    role: str
    status: str  # active | revoked | expired | incomplete | unknown (seen, not in this CA)
    last_seen: datetime | None
    firmware: str | None
    config: str | None
    clock_offset_ms: int | None
    cert_not_after: str | None
    revoked_at: str | None
    online: bool | None = None  # docks: the last state message's word (None: never heard)
    state_at: datetime | None = None  # docks: when that state was sent
    battery_pct: int | None = None  # recorders: as a dock last read them over the link
    spool_used_bytes: int | None = None
    spool_total_bytes: int | None = None
    files_waiting: int | None = None
    status_at: datetime | None = None
    status_dock: str | None = None
    officer: str | None = None  # recorders: issued to (name and certificate number) today

    @property
    def spool_share(self) -> float | None:
        """Used ÷ total of the recorder's spool, when reported."""
        if self.spool_used_bytes is None or not self.spool_total_bytes:
            return None
        return min(1.0, self.spool_used_bytes / self.spool_total_bytes)


def _body(line: bytes) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = parse(bytes(line).rstrip(b"\n"))["record"]["body"]
    except (ValueError, KeyError, TypeError):
        return None
    return body


def _last(session: Session, device: str, kind: str) -> dict[str, Any] | None:
    line = session.scalar(
        select(Record.line)
        .where(Record.device == device, Record.kind == kind)
        .order_by(Record.seq.desc())
        .limit(1)
    )
    return _body(line) if line is not None else None


def fleet_rows(session: Session, *, ca_dir: Path | None) -> list[FleetRow]:
    """Every device the CA enrolled or the server heard from, by id."""
    enrolled = {d.device: d for d in inventory.fleet(ca_dir)} if ca_dir is not None else {}
    seen = {d.id: d for d in session.scalars(select(Device))}
    docks, statuses = dock_states(session), recorder_statuses(session)
    issued = current_assignments(session)
    rows = []
    for device in sorted(set(enrolled) | set(seen) | set(docks)):
        inv, dev = enrolled.get(device), seen.get(device)
        boot = _last(session, device, "boot")
        clock = _last(session, device, "clock")
        offset = None
        if clock is not None:
            offset = int(clock["offset_ms"])
        elif boot is not None:
            offset = int(boot["clock"].get("offset_ms", 0))
        state, status, officer = docks.get(device), statuses.get(device), issued.get(device)
        rows.append(
            FleetRow(
                device=device,
                role=inv.role if inv else (dev.role if dev else ("dock" if state else "unknown")),
                status=inv.status if inv else "unknown",
                last_seen=dev.last_seen if dev else None,
                firmware=str(boot["firmware"]) if boot else None,
                config=str(boot["config"]) if boot else None,
                clock_offset_ms=offset,
                cert_not_after=inv.not_after if inv else None,
                revoked_at=inv.revoked_at if inv else None,
                online=state.online if state else None,
                state_at=state.at if state else None,
                battery_pct=status.battery_pct if status else None,
                spool_used_bytes=status.spool_used_bytes if status else None,
                spool_total_bytes=status.spool_total_bytes if status else None,
                files_waiting=status.files_waiting if status else None,
                status_at=status.read_at if status else None,
                status_dock=status.dock if status else None,
                officer=f"{officer[1]} {officer[0]}" if officer else None,
            )
        )
    return rows
