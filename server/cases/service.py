"""Enforcement subjects, officers, cases and case assignments.

Functions add to the caller's session and flush; the caller commits. Bad input raises
InvalidInputError naming the field and changes nothing; access is checked by ``server.cases.policy``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from custody.matters import is_known_matter
from server.auth.models import RESTRICTIONS, User
from server.auth.principal import Principal, Role
from server.cases import policy
from server.cases.errors import ConflictError, InvalidInputError, NotFoundError
from server.cases.models import ASSIGNMENT_ROLES, Case, CaseAssignment, EnforcementSubject, Officer
from server.cases.policy import Action
from server.cases.uscc import UsccError, validate_uscc
from server.custody_log.service import log_event
from server.db import utc_now

MAX_ID = 2**63 - 1
#: Dates of cases are the bureau's calendar days (China has one time zone and no daylight saving).
BUREAU_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
# Single-line text: no control characters. Text may hold line breaks and tabs, nothing else of C0.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_CONTACTS = 20


def bureau_today(now: datetime | None = None) -> date:
    """Today's date at the bureau (Asia/Shanghai)."""
    return (now or datetime.now(UTC)).astimezone(BUREAU_TZ).date()


def _storable(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{field} must be valid Unicode text", field=field) from None


def line(value: str, *, field: str, limit: int, empty: bool = False) -> str:
    """One line of text: trimmed, no control characters, 1..limit characters (0.. when ``empty``)."""
    value = value.strip()
    _storable(value, field)
    if (not value and not empty) or len(value) > limit or _CONTROL.search(value):
        low = 0 if empty else 1
        raise InvalidInputError(f"{field} is {low}–{limit} characters on one line", field=field)
    return value


def paragraph(value: str, *, field: str, limit: int, empty: bool = False) -> str:
    """Text that may run over lines: trimmed, 1..limit characters, no control characters but \\n \\r \\t."""
    value = value.strip()
    _storable(value, field)
    if (not value and not empty) or len(value) > limit or _CONTROL_IN_TEXT.search(value):
        raise InvalidInputError(f"{field} is {0 if empty else 1}–{limit} characters of text", field=field)
    return value


def _id(value: int, what: str) -> int:
    if not 1 <= value <= MAX_ID:
        raise NotFoundError(f"no {what} {value}")
    return value


# -- subjects ----------------------------------------------------------------------------------------


def create_subject(
    session: Session,
    *,
    principal: Principal,
    uscc: str,
    name: str,
    address: str,
    contacts: list[dict[str, str]],
    now: datetime | None = None,
) -> EnforcementSubject:
    """Register an enforcement subject by its unified social credit code (check character verified)."""
    policy.ensure_role(principal, Action.CREATE_SUBJECT)
    try:
        uscc = validate_uscc(uscc.strip())
    except UsccError as exc:
        raise InvalidInputError(str(exc), field="uscc") from None
    name = line(name, field="name", limit=200)
    address = line(address, field="address", limit=500, empty=True)
    if len(contacts) > MAX_CONTACTS:
        raise InvalidInputError(f"at most {MAX_CONTACTS} contacts", field="contacts")
    clean = [
        {
            "name": line(c.get("name", ""), field="contacts.name", limit=64),
            "phone": line(c.get("phone", ""), field="contacts.phone", limit=32, empty=True),
            "role": line(c.get("role", ""), field="contacts.role", limit=64, empty=True),
        }
        for c in contacts
    ]
    if session.scalar(select(EnforcementSubject.id).where(EnforcementSubject.uscc == uscc)) is not None:
        raise ConflictError(f"the subject {uscc} is registered already")
    subject = EnforcementSubject(
        uscc=uscc,
        name=name,
        address=address,
        contacts=json.dumps(clean, ensure_ascii=False),
        created_at=now or utc_now(),
        created_by=principal.user_id,
    )
    try:
        with session.begin_nested():  # a concurrent registration of the same code loses cleanly
            session.add(subject)
    except IntegrityError:
        raise ConflictError(f"the subject {uscc} is registered already") from None
    return subject


def contacts_of(subject: EnforcementSubject) -> list[dict[str, str]]:
    """The subject's contacts as stored."""
    out: list[dict[str, str]] = json.loads(subject.contacts)
    return out


def get_subject(session: Session, *, principal: Principal, subject_id: int) -> EnforcementSubject:
    """One subject of the register (NotFoundError)."""
    policy.ensure_role(principal, Action.READ_SUBJECTS)
    subject = session.get(EnforcementSubject, _id(subject_id, "subject"))
    if subject is None:
        raise NotFoundError(f"no subject {subject_id}")
    return subject


def list_subjects(
    session: Session, *, principal: Principal, query: str | None = None, limit: int = 100, offset: int = 0
) -> list[EnforcementSubject]:
    """Subjects by code, optionally those whose code or name contains ``query``."""
    policy.ensure_role(principal, Action.READ_SUBJECTS)
    q = select(EnforcementSubject).order_by(EnforcementSubject.uscc)
    if query:
        q = q.where(
            EnforcementSubject.uscc.contains(query, autoescape=True)
            | EnforcementSubject.name.contains(query, autoescape=True)
        )
    return list(session.scalars(q.limit(limit).offset(offset)))


# -- officers ----------------------------------------------------------------------------------------

_CERTIFICATE_RE = re.compile(r"^[0-9A-Za-z-]{1,64}$")


def create_officer(
    session: Session,
    *,
    principal: Principal,
    certificate_no: str,
    name: str,
    department: str,
    now: datetime | None = None,
) -> Officer:
    """Register an officer by their enforcement certificate number (执法证号), as recorders name them."""
    policy.ensure_role(principal, Action.CREATE_OFFICER)
    certificate_no = certificate_no.strip()
    if not _CERTIFICATE_RE.match(certificate_no):
        raise InvalidInputError(
            "a certificate number is 1–64 letters, digits or '-', as printed on the certificate",
            field="certificate_no",
        )
    officer = Officer(
        certificate_no=certificate_no,
        name=line(name, field="name", limit=64),
        department=line(department, field="department", limit=128),
        created_at=now or utc_now(),
    )
    if session.scalar(select(Officer.id).where(Officer.certificate_no == certificate_no)) is not None:
        raise ConflictError(f"an officer with certificate {certificate_no} is registered already")
    try:
        with session.begin_nested():
            session.add(officer)
    except IntegrityError:
        raise ConflictError(f"an officer with certificate {certificate_no} is registered already") from None
    return officer


def get_officer(session: Session, *, principal: Principal, officer_id: int) -> Officer:
    """One officer (NotFoundError)."""
    policy.ensure_role(principal, Action.READ_OFFICERS)
    officer = session.get(Officer, _id(officer_id, "officer"))
    if officer is None:
        raise NotFoundError(f"no officer {officer_id}")
    return officer


def list_officers(session: Session, *, principal: Principal) -> list[Officer]:
    """Every officer, by certificate number."""
    policy.ensure_role(principal, Action.READ_OFFICERS)
    return list(session.scalars(select(Officer).order_by(Officer.certificate_no)))


# -- cases -------------------------------------------------------------------------------------------


def check_case_number(number: str) -> str:
    """A case number as the bureau writes it (e.g. ``津人社监察〔2026〕17号``): one line, ≤ 64 characters."""
    return line(number, field="number", limit=64)


def check_restriction(value: str | None) -> str | None:
    """None, or one of the restrictions of server/auth."""
    if value is not None and value not in RESTRICTIONS:
        raise InvalidInputError(f"restriction is one of {', '.join(RESTRICTIONS)}", field="restriction")
    return value


def create_case(
    session: Session,
    *,
    principal: Principal,
    number: str,
    subject_id: int,
    matter_code: str,
    title: str,
    opened_on: date | None = None,
    restriction: str | None = None,
    now: datetime | None = None,
) -> Case:
    """Open a case; its creator becomes its first handler."""
    policy.ensure_role(principal, Action.CREATE_CASE)
    now = now or utc_now()
    number = check_case_number(number)
    if not is_known_matter(matter_code):
        raise InvalidInputError(
            f"{matter_code!r} is not in the bureau's enforcement-matter catalogue (custody/data/"
            "enforcement-matters.json), e.g. CF-02",
            field="matter_code",
        )
    if session.get(EnforcementSubject, _id(subject_id, "subject")) is None:
        raise InvalidInputError(f"no subject {subject_id}: register it first", field="subject_id")
    opened_on = opened_on or bureau_today(now)
    if opened_on > bureau_today(now):
        raise InvalidInputError("a case cannot be opened in the future", field="opened_on")
    if session.scalar(select(Case.id).where(Case.number == number)) is not None:
        raise ConflictError(f"case number {number} is taken")
    case = Case(
        number=number,
        subject_id=subject_id,
        matter_code=matter_code,
        title=line(title, field="title", limit=200, empty=True),
        status="open",
        opened_on=opened_on,
        closed_on=None,
        restriction=check_restriction(restriction),
        created_at=now,
        created_by=principal.user_id,
    )
    try:
        with session.begin_nested():
            session.add(case)
    except IntegrityError:
        raise ConflictError(f"case number {number} is taken") from None
    _assign(session, principal=principal, case=case, user_id=principal.user_id, role="handler", now=now)
    return case


def find_case(session: Session, *, case_id: int | None = None, number: str | None = None) -> Case:
    """A case by id or number, without access checks (NotFoundError)."""
    if case_id is not None:
        case = session.get(Case, _id(case_id, "case"))
    else:
        case = session.scalar(select(Case).where(Case.number == number))
    if case is None:
        raise NotFoundError(f"no case {case_id if case_id is not None else number} that you may see")
    return case


def get_case(
    session: Session, *, principal: Principal, case_id: int | None = None, number: str | None = None
) -> Case:
    """A case the principal may read (NotFoundError for others: their existence is not told)."""
    case = find_case(session, case_id=case_id, number=number)
    policy.ensure_reads_case(session, principal, case)
    return case


def list_cases(
    session: Session,
    *,
    principal: Principal,
    subject_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Case]:
    """The cases the principal may read, newest first."""
    policy.ensure_role(principal, Action.READ_EVIDENCE)
    scope = policy.scope_of(session, principal)
    q = select(Case).order_by(Case.opened_on.desc(), Case.id.desc())
    if not scope.all_cases:
        q = q.where(Case.id.in_(scope.case_ids))
    if subject_id is not None:
        q = q.where(Case.subject_id == subject_id)
    if status is not None:
        q = q.where(Case.status == status)
    return list(session.scalars(q.limit(limit).offset(offset)))


def update_case(
    session: Session,
    *,
    principal: Principal,
    case_id: int,
    status: str | None = None,
    closed_on: date | None = None,
    restriction: str | None = None,
    clear_restriction: bool = False,
    now: datetime | None = None,
) -> Case:
    """Close, reopen or archive a case, or change its restriction (assigned handlers).

    open → closed (closed_on, default today) → archived; closed → open (reopened). Archived is final.
    """
    now = now or utc_now()
    case = find_case(session, case_id=case_id)
    policy.ensure_works_case(session, principal, case)
    if case.status == "archived":
        raise ConflictError(f"case {case.number} is archived: it does not change any more")
    if status is not None and status != case.status:
        if (case.status, status) == ("open", "closed"):
            day = closed_on or bureau_today(now)
            if day < case.opened_on or day > bureau_today(now):
                raise InvalidInputError("closed_on lies between the opening day and today", field="closed_on")
            case.status, case.closed_on = "closed", day
        elif (case.status, status) == ("closed", "open"):
            case.status, case.closed_on = "open", None
        elif (case.status, status) == ("closed", "archived"):
            case.status = "archived"
        else:
            raise ConflictError(
                f"case {case.number} is {case.status}: it cannot become {status} (close it first)"
            )
    if clear_restriction:
        case.restriction = None
    elif restriction is not None:
        case.restriction = check_restriction(restriction)
    session.flush()
    return case


# -- assignments -------------------------------------------------------------------------------------

_ROLE_FOR = {"handler": Role.CASE_HANDLER, "reviewer": Role.LEGAL_REVIEWER}


def _assign(
    session: Session, *, principal: Principal, case: Case, user_id: int, role: str, now: datetime
) -> CaseAssignment:
    row = CaseAssignment(
        case_id=case.id, user_id=user_id, role=role, assigned_at=now, assigned_by=principal.user_id
    )
    session.add(row)
    session.flush()
    user = session.get(User, user_id)
    log_event(
        session=session,
        kind="access-granted",
        actor=principal.actor,
        time=now,
        detail={
            "target_kind": "case",
            "target_id": case.number,
            "assignment": row.id,
            "user": f"user:{user.username}" if user is not None else None,
            "role": role,
        },
    )
    return row


def assign(
    session: Session,
    *,
    principal: Principal,
    case_id: int,
    user_id: int,
    role: str,
    now: datetime | None = None,
) -> CaseAssignment:
    """Assign a user to a case as ``handler`` (needs the case-handler role) or ``reviewer`` (legal reviewer)."""
    now = now or utc_now()
    case = find_case(session, case_id=case_id)
    policy.ensure_assigns(session, principal, case)
    if case.status == "archived":
        raise ConflictError(f"case {case.number} is archived: nobody is assigned to it any more")
    if role not in ASSIGNMENT_ROLES:
        raise InvalidInputError("role is handler or reviewer", field="role")
    user = session.get(User, user_id) if 1 <= user_id <= MAX_ID else None
    if user is None or not user.active:
        raise InvalidInputError(f"no active user {user_id}", field="user_id")
    if _ROLE_FOR[role] not in user.roles:
        raise InvalidInputError(
            f"{user.username} does not hold the role {_ROLE_FOR[role].value} needed to be a case {role}",
            field="user_id",
        )
    held = session.scalar(
        select(CaseAssignment.id).where(
            CaseAssignment.case_id == case.id,
            CaseAssignment.user_id == user_id,
            CaseAssignment.role == role,
            CaseAssignment.ended_at.is_(None),
        )
    )
    if held is not None:
        raise ConflictError(f"{user.username} is a {role} of {case.number} already")
    return _assign(session, principal=principal, case=case, user_id=user_id, role=role, now=now)


def end_assignment(
    session: Session, *, principal: Principal, case_id: int, assignment_id: int, now: datetime | None = None
) -> CaseAssignment:
    """End an assignment (kept, with who ended it and when); the last handler of an open case stays."""
    now = now or utc_now()
    case = find_case(session, case_id=case_id)
    policy.ensure_assigns(session, principal, case)
    row = session.get(CaseAssignment, _id(assignment_id, "assignment"))
    if row is None or row.case_id != case.id:
        raise NotFoundError(f"no assignment {assignment_id} in case {case.number}")
    if row.ended_at is not None:
        raise ConflictError(f"assignment {assignment_id} ended already")
    if row.role == "handler" and case.status != "archived":
        handlers = session.scalar(
            select(func.count()).where(
                CaseAssignment.case_id == case.id,
                CaseAssignment.role == "handler",
                CaseAssignment.ended_at.is_(None),
            )
        )
        if handlers == 1:
            raise ConflictError(f"this is the last handler of {case.number}: assign another handler first")
    row.ended_at, row.ended_by = now, principal.user_id
    user = session.get(User, row.user_id)
    log_event(
        session=session,
        kind="access-revoked",
        actor=principal.actor,
        time=now,
        detail={
            "target_kind": "case",
            "target_id": case.number,
            "assignment": row.id,
            "user": f"user:{user.username}" if user is not None else None,
            "role": row.role,
        },
    )
    session.flush()
    return row


def assignments_of(
    session: Session, *, case_id: int, include_ended: bool = False
) -> list[tuple[CaseAssignment, str]]:
    """The case's assignments with usernames, oldest first."""
    return assignments_of_cases(session, case_ids=[case_id], include_ended=include_ended).get(case_id, [])


def assignments_of_cases(
    session: Session, *, case_ids: list[int], include_ended: bool = False
) -> dict[int, list[tuple[CaseAssignment, str]]]:
    """Several cases' assignments with usernames (case id → oldest first), in one query."""
    out: dict[int, list[tuple[CaseAssignment, str]]] = {}
    if not case_ids:
        return out
    q = (
        select(CaseAssignment, User.username)
        .join(User, User.id == CaseAssignment.user_id)
        .where(CaseAssignment.case_id.in_(sorted(set(case_ids))))
        .order_by(CaseAssignment.id)
    )
    if not include_ended:
        q = q.where(CaseAssignment.ended_at.is_(None))
    for a, name in session.execute(q):
        out.setdefault(a.case_id, []).append((a, name))
    return out


def usernames(session: Session, ids: set[int]) -> dict[int, str]:
    """Usernames by user id."""
    if not ids:
        return {}
    return {i: n for i, n in session.execute(select(User.id, User.username).where(User.id.in_(ids)))}
