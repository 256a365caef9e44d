"""Signed footage annotations: linking segments to a case or subject after capture, or correcting their
proof statement, without ever touching the capture record.

An annotation is signed by the server-signing key on behalf of the user who made it (users hold no
keys): Ed25519 over ``fieldproof/annotation/v1\\n`` + RFC 8785 of

    {"v": 1, "type": "fieldproof/footage-annotation", "time": "<UTC µs>", "user_id": 7,
     "by": "user:li.ming", "targets": [{"device": "REC-0001", "seq": 4, "hash": "sha256:…"}, …],
     "set": {"case": "…", "subject": "…", "proof": "…"}, "reason": "…", "key_id": "sha256:…"}

``set`` has the members changed and only those (``case`` '' = unlinked from any case). The context
string keeps an annotation signature from passing for an ack, a checkpoint or a record, and back.
Targets name each capture record by device, seq and record hash: an annotation cannot be moved onto
other footage. Rows are append-only (triggers from migration 0004).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.canonical import canonical, parse
from custody.signing import key_id
from server.auth.principal import Principal
from server.cases import footage, policy
from server.cases.errors import (
    AnnotationSignatureError,
    ConflictError,
    InvalidInputError,
    NotAllowedError,
    NotFoundError,
)
from server.cases.footage import Footage
from server.cases.models import Case, EnforcementSubject, FootageAnnotation, FootageAnnotationTarget
from server.cases.policy import Action
from server.cases.service import find_case, paragraph
from server.cases.uscc import UsccError, validate_uscc
from server.custody_log.format import log_time
from server.custody_log.service import log_event
from server.db import utc_now
from server.evidence.models import Segment
from server.ingest.models import Record

CONTEXT = b"fieldproof/annotation/v1\n"
TYPE = "fieldproof/footage-annotation"
MAX_TARGETS = 1000  # as the custody format's annotation record
MAX_PROOF = 2000
MAX_REASON = 500


@dataclass(frozen=True)
class AnnotationSigner:
    """The server-signing key (the one acks and checkpoints are signed with) and its certificate."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate

    @property
    def key_id(self) -> str:
        """sha256 of the certificate's DER."""
        return key_id(self.certificate)

    @classmethod
    def from_ca_dir(cls, ca_dir: Path) -> AnnotationSigner:
        """``server-signing.key``/``.pem`` from the provisioning CA directory; SettingsError if unusable."""
        from server.ingest.acks import AckSigner  # one loader for the one server-signing key

        ack = AckSigner.from_ca_dir(ca_dir)
        return cls(private_key=ack.private_key, certificate=ack.certificate)


@dataclass(frozen=True)
class Target:
    """A segment named by an annotation request: by (device, seq), or every segment of a recording."""

    device: str
    seq: int | None = None
    recording: str | None = None


def _resolve(session: Session, targets: list[Target]) -> list[int]:
    """Segment ids of the targets, without duplicates, in (device, seq) order; NotFoundError if one is unknown."""
    ids: set[int] = set()
    for t in targets:
        if t.seq is not None:
            found = session.scalar(select(Segment.id).where(Segment.device == t.device, Segment.seq == t.seq))
            if found is None:
                raise NotFoundError(f"no segment {t.device}:{t.seq} that you may see")
            ids.add(found)
        else:
            rows = list(
                session.scalars(
                    select(Segment.id).where(Segment.device == t.device, Segment.recording == t.recording)
                )
            )
            if not rows:
                raise NotFoundError(f"no recording {t.device}:{t.recording} that you may see")
            ids.update(rows)
    if len(ids) > MAX_TARGETS:
        raise InvalidInputError(f"an annotation names at most {MAX_TARGETS} segments", field="targets")
    return sorted(ids)


def _check_targets(session: Session, principal: Principal, segments: list[Footage]) -> None:
    """Each target must be readable (else 404) and the user must work it: a handler of its current case,
    or the inspector who recorded it (else 403). A restricted target needs a grant."""
    scope = policy.scope_of(session, principal)
    for seg in segments:
        siblings = footage.sibling_cases(session, seg)
        if not scope.reads_footage(
            case_number=seg.case_number, officer=seg.officer, recording_cases=siblings
        ):
            raise NotFoundError(f"no segment {seg.ref} that you may see")
        if not scope.works_footage(
            case_number=seg.case_number, officer=seg.officer, recording_cases=siblings
        ):
            raise NotAllowedError(
                f"segment {seg.ref} belongs to case {seg.case_number or '(none)'}: only its assigned handlers "
                "or the inspector who recorded it may annotate it"
            )
        case = session.scalar(select(Case).where(Case.number == seg.case_number)) if seg.case_number else None
        if case is not None:
            policy.unlock(
                session,
                principal,
                restriction=case.restriction,
                targets=policy.segment_targets(
                    case_number=case.number, device=seg.device, seq=seg.seq, recording=seg.recording
                ),
            )


def annotate(
    session: Session,
    *,
    principal: Principal,
    signer: AnnotationSigner,
    targets: list[Target],
    reason: str,
    case_number: str | None = None,
    subject_uscc: str | None = None,
    proof: str | None = None,
    now: datetime | None = None,
) -> FootageAnnotation:
    """Link segments to a case and/or subject, or correct their proof statement: one signed annotation,
    and a custody event per segment (``linked``, ``unlinked`` or ``annotated``)."""
    policy.ensure_role(principal, Action.ANNOTATE)
    now = now or utc_now()
    if not targets:
        raise InvalidInputError("name at least one segment or recording", field="targets")
    if case_number is None and subject_uscc is None and proof is None:
        raise InvalidInputError("set at least one of case_number, subject, proof", field="set")
    reason = paragraph(reason, field="reason", limit=MAX_REASON)
    change: dict[str, str] = {}
    case: Case | None = None
    subject: EnforcementSubject | None = None
    if case_number is not None:
        case_number = case_number.strip()
        if case_number:
            case = find_case(session, number=case_number)
            policy.ensure_works_case(session, principal, case)
            if case.status == "archived":
                raise ConflictError(f"case {case.number} is archived: nothing is linked to it any more")
        change["case"] = case_number
    if subject_uscc is not None:
        try:
            validate_uscc(subject_uscc.strip())
        except UsccError as exc:
            raise InvalidInputError(str(exc), field="subject") from None
        subject = session.scalar(
            select(EnforcementSubject).where(EnforcementSubject.uscc == subject_uscc.strip())
        )
        if subject is None:
            raise InvalidInputError(
                f"no subject {subject_uscc} in the register: register it first", field="subject"
            )
        change["subject"] = subject.uscc
    if proof is not None:
        change["proof"] = paragraph(proof, field="proof", limit=MAX_PROOF)
    segments = footage.segments_by_id(session, _resolve(session, targets))
    _check_targets(session, principal, segments)
    segments.sort(key=lambda s: (s.device, s.seq))

    body: dict[str, Any] = {
        "v": 1,
        "type": TYPE,
        "time": log_time(now),
        "user_id": principal.user_id,
        "by": principal.actor,
        "targets": [{"device": s.device, "seq": s.seq, "hash": s.record_hash} for s in segments],
        "set": change,
        "reason": reason,
        "key_id": signer.key_id,
    }
    signed = canonical(body)
    signature = signer.private_key.sign(CONTEXT + signed)
    row = FootageAnnotation(
        time=now,
        user_id=principal.user_id,
        actor=principal.actor,
        case_id=case.id if case is not None else None,
        case_number=change.get("case"),
        subject_id=subject.id if subject is not None else None,
        subject_uscc=change.get("subject"),
        proof=change.get("proof"),
        reason=reason,
        key_id=signer.key_id,
        signed=signed,
        signature=base64.b64encode(signature).decode("ascii"),
    )
    session.add(row)
    session.flush()
    session.add_all(
        [FootageAnnotationTarget(annotation_id=row.id, segment_id=s.segment_id) for s in segments]
    )
    if "case" in change:
        kind = "linked" if change["case"] else "unlinked"
    else:
        kind = "linked" if "subject" in change else "annotated"
    for s in segments:
        log_event(
            session=session,
            kind=kind,
            actor=principal.actor,
            time=now,
            device=s.device,
            seq=s.seq,
            record_hash=s.record_hash,
            digest=s.digest,
            detail={
                "annotation": row.id,
                "set": change,
                "was": {"case": s.case_number, "subject": s.subject, "proof": s.proof},
                "reason": reason,
                "key_id": signer.key_id,
                "via": principal.via,
            },
        )
    session.flush()
    return row


def verify_signature(signed: bytes, signature: str, certificate: x509.Certificate) -> dict[str, Any]:
    """The annotation object if ``signature`` (base64) is the certificate's key's signature over it with
    the annotation context, ``signed`` is canonical and names that key; AnnotationSignatureError otherwise."""
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        obj = parse(signed)
        is_canonical = canonical(obj) == signed
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise AnnotationSignatureError(f"the annotation or its signature is not well-formed: {exc}") from None
    if not isinstance(obj, dict) or not is_canonical or obj.get("type") != TYPE:
        raise AnnotationSignatureError("the signed text is not a canonical footage annotation")
    if obj.get("key_id") != key_id(certificate):
        raise AnnotationSignatureError(
            f"the annotation names key {obj.get('key_id')}, not this certificate's {key_id(certificate)}"
        )
    public = certificate.public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise AnnotationSignatureError("the certificate does not hold an Ed25519 key")
    try:
        public.verify(raw, CONTEXT + signed)
    except InvalidSignature:
        raise AnnotationSignatureError("the signature does not verify: the annotation was altered") from None
    return obj


def check_annotation(
    session: Session, *, annotation: FootageAnnotation, certificate: x509.Certificate
) -> dict[str, Any]:
    """Verify an annotation as stored: its signature, and that its columns and target rows say what was
    signed (each target's record still has the hash signed). AnnotationSignatureError otherwise."""
    obj = verify_signature(annotation.signed, annotation.signature, certificate)
    change = {
        k: v
        for k, v in (
            ("case", annotation.case_number),
            ("subject", annotation.subject_uscc),
            ("proof", annotation.proof),
        )
        if v is not None
    }
    if (obj["time"], obj["user_id"], obj["by"], obj["set"], obj["reason"]) != (
        log_time(annotation.time),
        annotation.user_id,
        annotation.actor,
        change,
        annotation.reason,
    ):
        raise AnnotationSignatureError(
            f"annotation {annotation.id}: the stored columns differ from what was signed"
        )
    held = session.execute(
        select(Segment.device, Segment.seq, Record.hash)
        .join(FootageAnnotationTarget, FootageAnnotationTarget.segment_id == Segment.id)
        .join(Record, Record.id == Segment.record_id)
        .where(FootageAnnotationTarget.annotation_id == annotation.id)
        .order_by(Segment.device, Segment.seq)
    )
    if [{"device": d, "seq": s, "hash": h} for d, s, h in held] != obj["targets"]:
        raise AnnotationSignatureError(f"annotation {annotation.id}: its targets differ from what was signed")
    return obj


def annotations_of(session: Session, *, segment_id: int) -> list[FootageAnnotation]:
    """The annotations naming a segment, oldest first."""
    q = (
        select(FootageAnnotation)
        .join(FootageAnnotationTarget, FootageAnnotationTarget.annotation_id == FootageAnnotation.id)
        .where(FootageAnnotationTarget.segment_id == segment_id)
        .order_by(FootageAnnotation.id)
    )
    return list(session.scalars(q))


def get_annotation(session: Session, *, principal: Principal, annotation_id: int) -> FootageAnnotation:
    """An annotation, if the principal may read at least one of its segments (NotFoundError)."""
    policy.ensure_role(principal, Action.READ_EVIDENCE)
    row = session.get(FootageAnnotation, annotation_id) if 1 <= annotation_id <= 2**63 - 1 else None
    if row is None:
        raise NotFoundError(f"no annotation {annotation_id} that you may see")
    scope = policy.scope_of(session, principal)
    ids = list(
        session.scalars(
            select(FootageAnnotationTarget.segment_id).where(FootageAnnotationTarget.annotation_id == row.id)
        )
    )
    if not any(
        scope.reads_footage(case_number=s.case_number, officer=s.officer)
        for s in footage.segments_by_id(session, ids)
    ):
        raise NotFoundError(f"no annotation {annotation_id} that you may see")
    return row
