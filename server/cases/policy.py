"""Who may do what in the case file — every rule in one place (the table in docs/case-file.md).

Three layers, checked in this order by every service function:

1. **Role × action** (``ROLE_RULES``): what a role may ever do here. IT admins and auditors open no
   evidence; IT admins keep the officer register.
2. **Case assignment**: a case handler works, and a legal reviewer reads, only the cases they are
   assigned to (and only while they still hold that role); a custodian reads every case (custody,
   export); an inspector reads the footage they recorded (segments naming their 执法证号). A case the
   user may not read answers 404, as if it did not exist.
3. **Restriction**: a record flagged state secret / trade secret / personal privacy — a case (all its
   records and footage), or one text record — opens only with an approved, unexpired access request
   for it (``server.auth.access.granted_access``), whoever asks, assigned or not. Targets:
   ``case`` = the case number; ``text-record`` = its id; ``segment`` = ``DEVICE:seq``;
   ``recording`` = ``DEVICE:recording``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.auth.access import granted_access
from server.auth.models import AccessRequest
from server.auth.principal import Principal, Role
from server.cases.errors import NotAllowedError, NotFoundError, RestrictedError
from server.cases.models import Case, CaseAssignment, Officer


class Action(enum.StrEnum):
    """What a user may try to do in the case file."""

    READ_SUBJECTS = "read-subjects"  # the register of enforcement subjects (no evidence in it)
    CREATE_SUBJECT = "create-subject"
    READ_OFFICERS = "read-officers"
    CREATE_OFFICER = "create-officer"
    CREATE_CASE = "create-case"
    READ_EVIDENCE = "read-evidence"  # cases, text records, footage, dossiers, search: per case below
    WORK_CASE = "work-case"  # status, text records, linking footage: assigned handlers
    ASSIGN = "assign"  # assigned handlers of the case, custodians
    ANNOTATE = "annotate"  # link footage / correct a proof statement


_EVIDENCE_READERS = frozenset({Role.INSPECTOR, Role.CASE_HANDLER, Role.LEGAL_REVIEWER, Role.CUSTODIAN})

#: Role × action: the roles that may ever attempt the action (case-level rules come on top).
ROLE_RULES: dict[Action, frozenset[Role]] = {
    Action.READ_SUBJECTS: _EVIDENCE_READERS,
    Action.CREATE_SUBJECT: frozenset({Role.CASE_HANDLER}),
    Action.READ_OFFICERS: frozenset(Role),
    Action.CREATE_OFFICER: frozenset({Role.IT_ADMIN}),
    Action.CREATE_CASE: frozenset({Role.CASE_HANDLER}),
    Action.READ_EVIDENCE: _EVIDENCE_READERS,
    Action.WORK_CASE: frozenset({Role.CASE_HANDLER}),
    Action.ASSIGN: frozenset({Role.CASE_HANDLER, Role.CUSTODIAN}),
    Action.ANNOTATE: frozenset({Role.CASE_HANDLER, Role.INSPECTOR}),
}


def ensure_role(principal: Principal, action: Action) -> None:
    """NotAllowedError unless one of the principal's roles may attempt ``action``."""
    allowed = ROLE_RULES[action]
    if not principal.has(*allowed):
        who = ", ".join(sorted(r.value for r in allowed))
        raise NotAllowedError(f"{action.value} needs one of the roles {who}")


@dataclass(frozen=True)
class Scope:
    """What a principal may read: every case (custodian), or their assigned cases and own footage."""

    all_cases: bool
    handler_of: dict[int, str]  # case id → number, assigned as handler (and holding the role)
    reviewer_of: dict[int, str]  # the same as legal reviewer
    officer_no: str | None  # the inspector's 执法证号: footage they recorded

    @property
    def case_ids(self) -> set[int]:
        """Ids of the cases assigned to the principal (any part)."""
        return set(self.handler_of) | set(self.reviewer_of)

    @property
    def case_numbers(self) -> set[str]:
        """Numbers of the cases assigned to the principal."""
        return set(self.handler_of.values()) | set(self.reviewer_of.values())

    def reads_case(self, case: Case) -> bool:
        """Whether the case (its record, not necessarily restricted contents) is readable."""
        return self.all_cases or case.id in self.handler_of or case.id in self.reviewer_of

    def reads_footage(
        self, *, case_number: str, officer: str, recording_cases: set[str] | None = None
    ) -> bool:
        """Whether a segment is readable: of a case of the scope; of no case, in a recording partly in
        one (``recording_cases``: its recording's current case numbers); or recorded by the inspector."""
        if self.all_cases or case_number in self.case_numbers:
            return True
        if case_number == "" and recording_cases and recording_cases & self.case_numbers:
            return True
        return self.officer_no is not None and officer == self.officer_no

    def works_footage(
        self, *, case_number: str, officer: str, recording_cases: set[str] | None = None
    ) -> bool:
        """Whether the principal may annotate a segment: a handler of its case (or, for a segment of no
        case, of a case its recording is partly in), or the inspector who recorded it."""
        handled = set(self.handler_of.values())
        if case_number in handled:
            return True
        if case_number == "" and recording_cases and recording_cases & handled:
            return True
        return self.officer_no is not None and officer == self.officer_no


def scope_of(session: Session, principal: Principal) -> Scope:
    """The principal's reading scope, from their roles, live assignments and officer record."""
    handler: dict[int, str] = {}
    reviewer: dict[int, str] = {}
    if principal.has(Role.CASE_HANDLER, Role.LEGAL_REVIEWER):
        rows = session.execute(
            select(CaseAssignment.case_id, CaseAssignment.role, Case.number)
            .join(Case, Case.id == CaseAssignment.case_id)
            .where(CaseAssignment.user_id == principal.user_id, CaseAssignment.ended_at.is_(None))
        )
        for case_id, role, number in rows:
            if role == "handler" and principal.has(Role.CASE_HANDLER):
                handler[case_id] = number
            elif role == "reviewer" and principal.has(Role.LEGAL_REVIEWER):
                reviewer[case_id] = number
    officer_no = None
    if principal.has(Role.INSPECTOR) and principal.officer_id is not None:
        officer_no = session.scalar(select(Officer.certificate_no).where(Officer.id == principal.officer_id))
    return Scope(
        all_cases=principal.has(Role.CUSTODIAN),
        handler_of=handler,
        reviewer_of=reviewer,
        officer_no=officer_no,
    )


def ensure_reads_case(session: Session, principal: Principal, case: Case) -> Scope:
    """NotFoundError unless the principal may read ``case`` (assigned, or a custodian)."""
    ensure_role(principal, Action.READ_EVIDENCE)
    scope = scope_of(session, principal)
    if not scope.reads_case(case):
        raise NotFoundError(f"no case {case.number} that you may see")
    return scope


def ensure_works_case(session: Session, principal: Principal, case: Case) -> None:
    """The principal is an assigned handler of ``case`` (404 if they may not even read it, else 403)."""
    scope = ensure_reads_case(session, principal, case)
    if case.id not in scope.handler_of:
        raise NotAllowedError(f"only the case handlers assigned to {case.number} may change it")


def ensure_assigns(session: Session, principal: Principal, case: Case) -> None:
    """A custodian, or an assigned handler of ``case``, may assign users to it."""
    ensure_role(principal, Action.ASSIGN)
    if principal.has(Role.CUSTODIAN):
        return
    ensure_works_case(session, principal, case)


def unlock(
    session: Session, principal: Principal, *, restriction: str | None, targets: list[tuple[str, str]]
) -> AccessRequest | None:
    """The grant that opens a restricted record (any of ``targets``: (kind, id)), or RestrictedError.

    None when the record is not restricted. The first target is the one the error tells the user to
    ask for.
    """
    if restriction is None:
        return None
    for kind, target_id in targets:
        grant = granted_access(
            session, principal, target_kind=kind, target_id=target_id, restriction=restriction
        )
        if grant is not None:
            return grant
    kind, target_id = targets[0]
    raise RestrictedError(target_kind=kind, target_id=target_id, restriction=restriction)


def segment_targets(*, case_number: str, device: str, seq: int, recording: str) -> list[tuple[str, str]]:
    """What a grant may name to open a segment of a restricted case: the case, the segment, its recording."""
    return [("case", case_number), ("segment", f"{device}:{seq}"), ("recording", f"{device}:{recording}")]
