"""Oversight figures over the footage the server holds (docs/web.md): per department and officer,

- 关联率: the share of segments whose current case is set (captured with a case, or linked later);
- 上传及时率: the share of segments received within 24 hours of their end;
- 使用率: the share of recorders that recorded anything in the period — of the enrolled recorders over
  all, and per department and officer of the recorders issued to them (配发, ``server/devices/
  assignments.py``) in the period: issued recorders with at least one segment filed in the period
  (segment end within it) ÷ issued recorders;
- warnings against the recording policy (音像记录事项清单, ``firmware-config/recording-policy.toml``):
  an open case with no footage at all; an open case whose text records show a scene the policy
  requires recorded (an inspection note: 现场检查; an inquiry transcript: 调查询问) with no footage of
  that scene filed; a filed recording that lacks a marker its scene requires.

Aggregates only: no content, so no custody event (as ``GET /cases`` lists are not logged).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.canonical import parse
from edge.config.base import default_policy_path
from edge.config.loading import load_policy
from provisioning import inventory
from server.cases.footage import current_case
from server.cases.models import Case, Officer, SegmentFacts, TextRecord
from server.db import utc_now
from server.devices.assignments import assignments_in
from server.evidence.models import Segment
from server.ingest.models import Record

TIMELY = timedelta(hours=24)
#: The scene a kind of text record shows took place (the written record of a recordable activity).
SCENE_OF_RECORD = {"inspection-note": "onsite-inspection", "inquiry-transcript": "inquiry"}


@dataclass(frozen=True)
class Warning:
    """A case where the recording policy asked for footage, or a marker, that is not filed."""

    case_number: str
    kind: str  # no-footage | scene-not-recorded | marker-missing
    scene: str = ""
    device: str = ""
    recording: str = ""
    markers: tuple[str, ...] = ()


@dataclass
class Tally:
    """Counts of one department or officer."""

    segments: int = 0
    linked: int = 0
    timely: int = 0
    issued: int = 0  # recorders issued to them in the period (配发)
    issued_used: int = 0  # of which at least one segment was filed in the period

    @property
    def use_rate(self) -> float | None:
        return self.issued_used / self.issued if self.issued else None

    @property
    def link_rate(self) -> float | None:
        return self.linked / self.segments if self.segments else None

    @property
    def timely_rate(self) -> float | None:
        return self.timely / self.segments if self.segments else None


@dataclass
class Oversight:
    """The figures of one period."""

    since: datetime
    by_department: dict[str, Tally] = field(default_factory=dict)
    by_officer: dict[str, Tally] = field(default_factory=dict)
    officer_names: dict[str, str] = field(default_factory=dict)
    recorders: int = 0
    recorders_used: int = 0
    warnings: list[Warning] = field(default_factory=list)

    @property
    def use_rate(self) -> float | None:
        return self.recorders_used / self.recorders if self.recorders else None


def _when(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def oversight(session: Session, *, ca_dir: Path | None, days: int = 30) -> Oversight:
    """The figures of the last ``days`` days (by segment start)."""
    since = utc_now() - timedelta(days=days)
    out = Oversight(since=since)
    officers = {o.certificate_no: o for o in session.scalars(select(Officer))}
    out.officer_names = {k: o.name for k, o in officers.items()}
    by_dept: dict[str, Tally] = defaultdict(Tally)
    by_officer: dict[str, Tally] = defaultdict(Tally)
    used: set[str] = set()
    days_used: dict[str, set[date]] = defaultdict(set)  # device → days (UTC) a segment of it ended
    rows = session.execute(
        select(Segment.device, Segment.officer, Segment.end, current_case(), Record.received_at).join(
            Record, Record.id == Segment.record_id
        )
    )
    for device, officer, end, case_number, received in rows:
        if _when(end) < since:
            continue
        used.add(device)
        days_used[device].add(_when(end).date())
        dept = officers[officer].department if officer in officers else "—"
        for tally in (by_dept[dept], by_officer[officer]):
            tally.segments += 1
            tally.linked += 1 if case_number else 0
            tally.timely += 1 if received - _when(end) <= TIMELY else 0
    # 使用率 by 配发: each (recorder, officer) issued in the period counts once for the officer and
    # once for their department; used when a segment of that recorder is filed in the period.
    # Segments name their collecting officer; the recorder counts as used by whoever it was issued to.
    # A recorder issued to two officers in turn counts for whoever held it the day a segment ended.
    issued: dict[tuple[str, int], tuple[Officer, bool]] = {}
    for a, holder in assignments_in(session, since=since.date(), until=utc_now().date()):
        was_used = any(
            a.valid_from <= d and (a.valid_until is None or d <= a.valid_until) for d in days_used[a.recorder]
        )
        key = (a.recorder, holder.id)
        issued[key] = (holder, was_used or (key in issued and issued[key][1]))
    for holder, was_used in issued.values():
        out.officer_names.setdefault(holder.certificate_no, holder.name)
        for tally in (by_dept[holder.department], by_officer[holder.certificate_no]):
            tally.issued += 1
            tally.issued_used += 1 if was_used else 0
    out.by_department = dict(sorted(by_dept.items()))
    out.by_officer = dict(sorted(by_officer.items()))
    recorders = (
        {d.device for d in inventory.fleet(ca_dir) if d.role == "recorder" and d.status == "active"}
        if ca_dir is not None
        else set()
    )
    out.recorders = len(recorders)
    out.recorders_used = len(used & recorders)
    out.warnings = policy_warnings(session)
    return out


def _markers_by_recording(session: Session) -> dict[tuple[str, str], set[str]]:
    """The marker labels recorded in each (device, recording), from the signed marker records."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for device, line in session.execute(select(Record.device, Record.line).where(Record.kind == "marker")):
        try:
            body = parse(bytes(line).rstrip(b"\n"))["record"]["body"]
            found[(device, str(body["recording"]))].add(str(body["label"]))
        except (ValueError, KeyError, TypeError):
            continue  # malformed: the verifier reports it
    return found


def policy_warnings(session: Session) -> list[Warning]:
    """Open cases against the recording policy: no footage; a scene its records show, not recorded;
    a recording without a marker its scene requires."""
    policy = load_policy(default_policy_path())
    required = {s.code for s in policy.scenes if s.recording in ("full", "stages")}
    open_cases = list(session.scalars(select(Case).where(Case.status == "open").order_by(Case.number)))
    numbers = {c.number for c in open_cases}
    scenes: dict[str, set[str]] = defaultdict(set)
    recordings: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
    rows = session.execute(
        select(current_case(), Segment.device, Segment.recording, SegmentFacts.scene).outerjoin(
            SegmentFacts, SegmentFacts.segment_id == Segment.id
        )
    )
    for number, device, recording, scene in rows:
        if number in numbers:
            scenes[number].add(scene or "")
            recordings[number].setdefault((device, recording), scene or "")
    shown: dict[str, set[str]] = defaultdict(set)
    for number, kind in session.execute(
        select(Case.number, TextRecord.kind).join(TextRecord, TextRecord.case_id == Case.id)
    ):
        if number in numbers and kind in SCENE_OF_RECORD:
            shown[number].add(SCENE_OF_RECORD[kind])
    marks = _markers_by_recording(session)
    out: list[Warning] = []
    for case in open_cases:
        if not scenes[case.number]:
            out.append(Warning(case.number, "no-footage"))
            continue
        for scene in sorted(shown[case.number] & required - scenes[case.number]):
            out.append(Warning(case.number, "scene-not-recorded", scene=scene))
        for (device, recording), scene in sorted(recordings[case.number].items()):
            try:
                wanted = policy.scene(scene).required_markers
            except KeyError:
                continue  # a scene the policy does not know: nothing it requires
            missing = tuple(m for m in wanted if m not in marks[(device, recording)])
            if missing:
                out.append(Warning(case.number, "marker-missing", scene, device, recording, missing))
    return out
