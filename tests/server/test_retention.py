"""Retention and legal hold on both databases: non-case footage past 6 months is purged by the sweep,
younger footage, linked footage and held footage are kept (held until the hold is released), a dry
run changes nothing, every purge is a custody event, and the records stay.

On S3 (FIELDPROOF_TEST_STORE=s3) the same tests run through ``S3BlobStore.purge``, and a hold also
puts the store's own legal hold on the blobs it covers. The sweep's clock is simulated (7 months on),
the store's is not: the world's S3 store therefore puts no retention date on its blobs
(``s3_object_lock_days=0``; legal holds still work on the Object Lock bucket), and
``test_sweep_leaves_blobs_the_store_still_locks`` shows what a real retention date does."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from server.auth.principal import Role
from server.custody_log.models import CustodyEvent
from server.db import transaction, utc_now
from server.evidence.models import Segment
from server.evidence.s3 import S3BlobStore
from server.ingest.models import Record
from server.retention.locks import locks_in_store
from server.retention.models import RetentionPurge
from server.retention.policy import add_months
from server.retention.sweep import sweep
from tests.server.case_helpers import CASE_A, USCC_A, CaseApi, Seg, ingest, make_api, write_spool
from tests.server.conftest import SAMPLE_START, Fleet


class World:
    """REC-0001: two segments of no case, one of case A; REC-0002: two segments of no case."""

    def __init__(self, tmp_path: Path, api: CaseApi) -> None:
        self.api = api
        self.custodian = api.user("custodian1", Role.CUSTODIAN)
        self.legal = api.user("legal1", Role.LEGAL_REVIEWER)
        self.handler = api.user("handler1", Role.CASE_HANDLER)
        self.inspector = api.user("inspector1", Role.INSPECTOR)
        assert (
            self.handler.post("/api/v1/subjects", json={"uscc": USCC_A, "name": "用人单位"}).status_code
            == 201
        )
        subject = self.handler.get("/api/v1/subjects", params={"q": USCC_A}).json()[0]["id"]
        made = self.handler.post(
            "/api/v1/cases", json={"number": CASE_A, "subject_id": subject, "matter_code": "CF-02"}
        )
        assert made.status_code == 201, made.text
        self.case_id = made.json()["id"]
        self.rec1 = write_spool(
            tmp_path / "s1", api.fleet, "REC-0001", [Seg(), Seg(), Seg(case=CASE_A)], start=SAMPLE_START
        )
        self.rec2 = write_spool(tmp_path / "s2", api.fleet, "REC-0002", [Seg(), Seg()], start=SAMPLE_START)
        ingest(api, tmp_path / "s1", "REC-0001")
        ingest(api, tmp_path / "s2", "REC-0002")
        self.store = api.store

    def sweep(self, now: datetime, *, dry_run: bool = False) -> Any:
        return sweep(factory=self.api.factory, store=self.store, now=now, dry_run=dry_run)

    def digest(self, rec: dict[str, Any]) -> str:
        return str(rec["body"]["digest"])

    def store_held(self, recs: list[dict[str, Any]]) -> list[bool] | None:
        """The store's own legal hold on each blob (None on a store without Object Lock)."""
        if not locks_in_store(self.store):
            return None
        assert isinstance(self.store, S3BlobStore)
        return [self.store.lock_state(self.digest(r)).legal_hold for r in recs]

    def retention_events(self) -> list[dict[str, Any]]:
        with self.api.factory() as s:
            rows = s.scalars(
                select(CustodyEvent).where(CustodyEvent.kind == "warning").order_by(CustodyEvent.id)
            )
            return [
                {
                    "device": r.device,
                    "seq": r.seq,
                    "digest": r.digest,
                    "actor": r.actor,
                    **json.loads(r.detail),
                }
                for r in rows
                if json.loads(r.detail).get("action") == "retention-delete"
            ]


@pytest.fixture
def world(tmp_path: Path, database_url: str, fleet: Fleet) -> World:
    return World(tmp_path, make_api(tmp_path, database_url, fleet, s3_object_lock_days=0))


def test_sweep_purges_only_old_unlinked_unheld_footage(world: World) -> None:
    w, api = world, world.api
    later, sooner = add_months(utc_now(), 7), add_months(utc_now(), 5)
    all_recs = [*w.rec1, *w.rec2]
    non_case = [w.rec1[0], w.rec1[1], *w.rec2]

    # Younger than six months: nothing is due.
    assert w.sweep(sooner).plan.due == []
    # A dry run lists the non-case blobs and changes nothing.
    dry = w.sweep(later, dry_run=True)
    assert sorted(b.digest for b in dry.plan.due) == sorted(w.digest(r) for r in non_case)
    assert dry.purged == []
    assert all(w.store.exists(w.digest(r)) for r in all_recs)
    assert w.retention_events() == []

    # A hold on REC-0002, and REC-0001's second segment linked to case A after capture.
    held = w.custodian.post(
        "/api/v1/legal-holds", json={"device": "REC-0002", "reason": "投诉调查, 保全录像"}
    )
    assert held.status_code == 201, held.text
    hold = held.json()
    assert hold["active"]
    assert [e["kind"] for e in hold["history"]] == ["placed"]
    assert w.store_held(w.rec2) in (None, [True, True])  # on S3: the store holds them too
    assert w.store_held(w.rec1) in (None, [False, False, False])
    assert (
        w.inspector.post("/api/v1/legal-holds", json={"device": "REC-0002", "reason": "x"}).status_code == 403
    )
    linked = w.handler.post(
        "/api/v1/annotations",
        json={
            "targets": [{"device": "REC-0001", "seq": w.rec1[1]["seq"]}],
            "case_number": CASE_A,
            "reason": "补充关联",
        },
    )
    assert linked.status_code == 201, linked.text
    with api.factory() as s:
        lines_before = {(r.device, r.seq): bytes(r.line) for r in s.scalars(select(Record))}

    done = w.sweep(later)
    assert done.purged == [w.digest(w.rec1[0])]
    assert set(done.plan.held) == {w.digest(r) for r in w.rec2}
    assert not w.store.exists(w.digest(w.rec1[0]))
    assert all(w.store.exists(w.digest(r)) for r in all_recs[1:])
    events = w.retention_events()
    assert [(e["device"], e["seq"], e["digest"]) for e in events] == [
        ("REC-0001", w.rec1[0]["seq"], w.digest(w.rec1[0]))
    ]
    assert events[0]["actor"] == "server:retention-sweep"
    assert events[0]["retention_class"] == "non-case"
    with api.factory() as s:  # the records, segments and files rows stay; the purge is recorded
        assert {(r.device, r.seq): bytes(r.line) for r in s.scalars(select(Record))} == lines_before
        assert s.scalar(select(Segment).where(Segment.device == "REC-0001", Segment.seq == w.rec1[0]["seq"]))
        assert list(s.scalars(select(RetentionPurge.digest))) == [w.digest(w.rec1[0])]

    status = w.legal.get(f"/api/v1/retention/segments/REC-0001/{w.rec1[0]['seq']}").json()
    assert status["retention_class"] == "non-case"
    assert status["purged_at"] is not None
    # The purged file is gone, and says so (410 with when and why); its neighbour still plays.
    gone = w.custodian.get(f"/api/v1/segments/REC-0001/{w.rec1[0]['seq']}/media")
    assert gone.status_code == 410, gone.text
    assert "retention sweep" in gone.json()["detail"]
    assert "non-case" in gone.json()["detail"]
    kept = w.custodian.get(f"/api/v1/segments/REC-0001/{w.rec1[1]['seq']}/media")
    assert kept.status_code == 200
    assert len(kept.content) == w.rec1[1]["body"]["size"]
    status = w.legal.get(f"/api/v1/retention/segments/REC-0001/{w.rec1[1]['seq']}").json()
    assert (status["retention_class"], status["case_number"], status["due_at"]) == ("case", CASE_A, None)
    status = w.custodian.get(f"/api/v1/retention/segments/REC-0002/{w.rec2[0]['seq']}").json()
    assert status["hold_ids"] == [hold["id"]]
    assert status["due_now"] is False
    assert w.handler.get(f"/api/v1/retention/segments/REC-0002/{w.rec2[0]['seq']}").status_code == 403

    # Nothing more goes while the hold stands; released (with a reason), the held footage is purged.
    assert w.sweep(later).purged == []
    assert w.store_held(w.rec2) in (None, [True, True])
    released = w.legal.post(f"/api/v1/legal-holds/{hold['id']}/release", json={"reason": "调查结束"})
    assert released.status_code == 200, released.text
    assert [e["kind"] for e in released.json()["history"]] == ["placed", "released"]
    again = w.legal.post(f"/api/v1/legal-holds/{hold['id']}/release", json={"reason": "再次"})
    assert again.status_code == 409
    assert w.custodian.get("/api/v1/legal-holds", params={"active": True}).json() == []
    assert w.store_held(w.rec2) in (None, [False, False])  # lifted with the last hold covering them
    done = w.sweep(later)
    assert sorted(done.purged) == sorted(w.digest(r) for r in w.rec2)
    assert not any(w.store.exists(w.digest(r)) for r in w.rec2)
    assert sorted((e["device"], e["seq"]) for e in w.retention_events()[1:]) == sorted(
        ("REC-0002", r["seq"]) for r in w.rec2
    )
    # The case's footage stays, whatever the date.
    assert w.store.exists(w.digest(w.rec1[1]))
    assert w.store.exists(w.digest(w.rec1[2]))
    assert w.sweep(add_months(utc_now(), 600)).plan.due == []


def test_case_hold_archive_rule_and_append_only_history(world: World) -> None:
    w, api = world, world.api
    made = w.legal.post("/api/v1/legal-holds", json={"case_id": w.case_id, "reason": "行政复议"})
    assert made.status_code == 201, made.text
    assert w.legal.post("/api/v1/legal-holds", json={"case_id": 999999, "reason": "x"}).status_code == 404
    assert w.legal.post("/api/v1/legal-holds", json={"reason": "x"}).status_code == 422
    # Unlinked from the case later, footage captured with its number stays held.
    gone = w.handler.post(
        "/api/v1/annotations",
        json={
            "targets": [{"device": "REC-0001", "seq": w.rec1[2]["seq"]}],
            "case_number": "",
            "reason": "误关联",
        },
    )
    assert gone.status_code == 201, gone.text
    plan = w.sweep(add_months(utc_now(), 7), dry_run=True).plan
    assert plan.held == {w.digest(w.rec1[2]): [made.json()["id"]]}

    rule = w.custodian.put(
        f"/api/v1/retention/cases/{w.case_id}/archive-rule", json={"keep_years": 30, "reason": "长期保管"}
    )
    assert rule.status_code == 200, rule.text
    status = w.custodian.get(f"/api/v1/retention/cases/{w.case_id}").json()
    assert status["archive_rule"]["keep_years"] == 30
    assert status["keep_until"] is None  # the case is still open
    assert status["hold_ids"] == [made.json()["id"]]
    with pytest.raises(DBAPIError), transaction(api.factory) as s:
        s.execute(text("UPDATE legal_hold_events SET note = 'x'"))
    with pytest.raises(DBAPIError), transaction(api.factory) as s:
        s.execute(text("DELETE FROM case_archive_rules"))


@pytest.mark.skipif(
    os.environ.get("FIELDPROOF_TEST_STORE", "local") != "s3",
    reason="S3 Object Lock exists only on the S3 store: make test's FIELDPROOF_TEST_STORE=s3 run has it",
)
def test_sweep_leaves_blobs_the_store_still_locks(tmp_path: Path, database_url: str, fleet: Fleet) -> None:
    """Retention in the store runs from commit (here 1 day), the sweep's from capture: a blob due by the
    sweep's clock but still locked by the store's is left alone, unmarked, and reported; a store legal
    hold that no database hold explains is reported, never lifted by the sweep."""
    w = World(tmp_path, make_api(tmp_path, database_url, fleet, s3_object_lock_days=1))
    assert isinstance(w.store, S3BlobStore)
    later = add_months(utc_now(), 7)
    non_case = [w.rec1[0], w.rec1[1], *w.rec2]
    done = w.sweep(later)
    assert done.purged == []
    assert sorted(done.locked) == sorted(w.digest(r) for r in non_case)
    assert all("store retention until" in why for why in done.locked.values())
    assert all(w.store.exists(w.digest(r)) for r in [*w.rec1, *w.rec2])
    assert w.retention_events() == []
    with w.api.factory() as s:
        assert list(s.scalars(select(RetentionPurge.digest))) == []  # nothing marked purged on paper
    # A legal hold put on a blob in the store by someone else: reported, kept.
    w.store.set_legal_hold(w.digest(w.rec2[0]), True)
    assert "legal hold" in w.sweep(later).locked[w.digest(w.rec2[0])]
    assert w.store.lock_state(w.digest(w.rec2[0])).legal_hold is True
    w.store.set_legal_hold(w.digest(w.rec2[0]), False)
