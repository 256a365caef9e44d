"""The case file: enforcement subjects, officers, cases and their assignments, text records, signed
footage annotations (append-only), and the footage index for search (docs/case-file.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Frozen: this file spells out its schema instead of importing the models (see 0001). The footage
index (``segment_facts``, ``segment_fixes``) is filled here for segments filed before this migration,
from their signed journal lines; ingest fills it for later ones.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from server.db import BigId, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_STATUSES = ("open", "closed", "archived")
_ASSIGNMENT_ROLES = ("handler", "reviewer")
_TEXT_KINDS = ("inspection-note", "inquiry-transcript", "notice", "decision", "other")
_MEDIA_TYPES = (
    "application/pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "image/png",
    "image/jpeg",
)
_RESTRICTIONS = ("state-secret", "trade-secret", "personal-privacy")
_APPEND_ONLY = ("footage_annotations", "footage_annotation_targets")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}")


def upgrade() -> None:
    op.create_table(
        "enforcement_subjects",
        sa.Column("id", BigId, nullable=False),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("address", sa.String(500), nullable=False),
        sa.Column("contacts", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enforcement_subjects"),
        sa.UniqueConstraint("uscc", name="uq_enforcement_subjects_uscc"),
        _fk("enforcement_subjects", "created_by", "users"),
    )
    op.create_table(
        "officers",
        sa.Column("id", BigId, nullable=False),
        sa.Column("certificate_no", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("department", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_officers"),
        sa.UniqueConstraint("certificate_no", name="uq_officers_certificate_no"),
    )
    op.create_table(
        "cases",
        sa.Column("id", BigId, nullable=False),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.BigInteger(), nullable=False),
        sa.Column("matter_code", sa.String(16), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_on", sa.Date(), nullable=False),
        sa.Column("closed_on", sa.Date(), nullable=True),
        sa.Column("restriction", sa.String(16), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.UniqueConstraint("number", name="uq_cases_number"),
        _fk("cases", "subject_id", "enforcement_subjects"),
        _fk("cases", "created_by", "users"),
        sa.CheckConstraint(_in("status", _STATUSES), name=op.f("ck_cases_status")),
        sa.CheckConstraint(
            "restriction IS NULL OR " + _in("restriction", _RESTRICTIONS), name=op.f("ck_cases_restriction")
        ),
        sa.CheckConstraint("closed_on IS NULL OR closed_on >= opened_on", name=op.f("ck_cases_closed_on")),
    )
    op.create_index("ix_cases_subject_id", "cases", ["subject_id"])
    op.create_table(
        "case_assignments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("assigned_at", UTCDateTime(), nullable=False),
        sa.Column("assigned_by", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("ended_by", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_case_assignments"),
        _fk("case_assignments", "case_id", "cases"),
        _fk("case_assignments", "user_id", "users"),
        _fk("case_assignments", "assigned_by", "users"),
        _fk("case_assignments", "ended_by", "users"),
        sa.CheckConstraint(_in("role", _ASSIGNMENT_ROLES), name=op.f("ck_case_assignments_role")),
    )
    op.create_index("ix_case_assignments_case_id", "case_assignments", ["case_id"])
    op.create_index("ix_case_assignments_user_id", "case_assignments", ["user_id"])
    op.create_table(
        "text_records",
        sa.Column("id", BigId, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("media_type", sa.String(100), nullable=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("uploaded_by", sa.BigInteger(), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(), nullable=False),
        sa.Column("restriction", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_text_records"),
        _fk("text_records", "case_id", "cases"),
        _fk("text_records", "uploaded_by", "users"),
        sa.ForeignKeyConstraint(["digest"], ["files.digest"], name="fk_text_records_digest_files"),
        sa.CheckConstraint(_in("kind", _TEXT_KINDS), name=op.f("ck_text_records_kind")),
        sa.CheckConstraint(_in("media_type", _MEDIA_TYPES), name=op.f("ck_text_records_media_type")),
        sa.CheckConstraint(
            "restriction IS NULL OR " + _in("restriction", _RESTRICTIONS),
            name=op.f("ck_text_records_restriction"),
        ),
        sa.CheckConstraint("size >= 0", name=op.f("ck_text_records_size")),
    )
    op.create_index("ix_text_records_case_id", "text_records", ["case_id"])
    op.create_index("ix_text_records_digest", "text_records", ["digest"])
    op.create_table(
        "footage_annotations",
        sa.Column("id", BigId, nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=True),
        sa.Column("case_number", sa.String(64), nullable=True),
        sa.Column("subject_id", sa.BigInteger(), nullable=True),
        sa.Column("subject_uscc", sa.String(18), nullable=True),
        sa.Column("proof", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(71), nullable=False),
        sa.Column("signed", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_footage_annotations"),
        _fk("footage_annotations", "user_id", "users"),
        _fk("footage_annotations", "case_id", "cases"),
        _fk("footage_annotations", "subject_id", "enforcement_subjects"),
    )
    op.create_index("ix_footage_annotations_case_id", "footage_annotations", ["case_id"])
    op.create_table(
        "footage_annotation_targets",
        sa.Column("annotation_id", sa.BigInteger(), nullable=False),
        sa.Column("segment_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("annotation_id", "segment_id", name="pk_footage_annotation_targets"),
        sa.ForeignKeyConstraint(
            ["annotation_id"],
            ["footage_annotations.id"],
            name="fk_footage_annotation_targets_annotation_id_footage_annotations",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"], ["segments.id"], name="fk_footage_annotation_targets_segment_id_segments"
        ),
    )
    op.create_index("ix_footage_annotation_targets_segment_id", "footage_annotation_targets", ["segment_id"])
    op.create_table(
        "segment_facts",
        sa.Column("segment_id", sa.BigInteger(), nullable=False),
        sa.Column("container", sa.String(16), nullable=False),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.Column("matter", sa.String(16), nullable=False),
        sa.Column("scene", sa.String(64), nullable=False),
        sa.Column("proof", sa.Text(), nullable=False),
        sa.Column("fix", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("segment_id", name="pk_segment_facts"),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], name="fk_segment_facts_segment_id_segments"),
    )
    op.create_index("ix_segment_facts_matter", "segment_facts", ["matter"])
    op.create_index("ix_segment_facts_scene", "segment_facts", ["scene"])
    op.create_table(
        "segment_fixes",
        sa.Column("segment_id", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("t", sa.String(24), nullable=False),
        sa.Column("lat_e7", sa.Integer(), nullable=False),
        sa.Column("lon_e7", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("segment_id", "n", name="pk_segment_fixes"),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], name="fk_segment_fixes_segment_id_segments"),
    )
    op.create_index("ix_segment_fixes_lat_e7_lon_e7", "segment_fixes", ["lat_e7", "lon_e7"])

    _append_only()
    _backfill_footage_index()


def _append_only() -> None:
    """Annotations are evidence of who linked or corrected what: they may only ever grow."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION footage_annotations_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        for table in _APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION footage_annotations_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION footage_annotations_append_only()"
            )
        return
    for table in _APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def _backfill_footage_index() -> None:
    """Index the segments already filed, from their signed journal lines (the same rules as ingest)."""
    conn = op.get_bind()
    facts = sa.table(
        "segment_facts",
        sa.column("segment_id"),
        sa.column("container"),
        sa.column("duration_ms"),
        sa.column("matter"),
        sa.column("scene"),
        sa.column("proof"),
        sa.column("fix"),
    )
    fixes = sa.table(
        "segment_fixes",
        sa.column("segment_id"),
        sa.column("n"),
        sa.column("t"),
        sa.column("lat_e7"),
        sa.column("lon_e7"),
    )
    rows = conn.execute(
        sa.text(
            "SELECT segments.id, records.line FROM segments JOIN records ON records.id = segments.record_id"
        )
    )
    for segment_id, line in rows.all():
        body = json.loads(bytes(line))["record"]["body"]
        location = body["location"]
        conn.execute(
            facts.insert().values(
                segment_id=segment_id,
                container=body["media"]["container"],
                duration_ms=body["media"]["duration_ms"],
                matter=body["matter"],
                scene=body["scene"],
                proof=body["proof"].replace("\x00", ""),
                fix=bool(location["fix"]),
            )
        )
        for n, fix in enumerate(location.get("fixes", []) if location["fix"] else []):
            conn.execute(
                fixes.insert().values(
                    segment_id=segment_id, n=n, t=fix["t"], lat_e7=fix["lat_e7"], lon_e7=fix["lon_e7"]
                )
            )


def downgrade() -> None:
    # Dropping a table drops its triggers on both databases.
    for table in (
        "segment_fixes",
        "segment_facts",
        "footage_annotation_targets",
        "footage_annotations",
        "text_records",
        "case_assignments",
        "cases",
        "officers",
        "enforcement_subjects",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION footage_annotations_append_only()")
