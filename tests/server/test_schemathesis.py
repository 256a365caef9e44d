"""Schemathesis against the app's own OpenAPI schema, signed in as every role: no 5xx, and every answer
is one the schema documents (status code, content type, headers, body).

Requests go through the ASGI app in process (``schemathesis.openapi.from_asgi``) over the matrix's
world (real users, cases and ingested footage), so generated ids meet real rows. The role of each
request is drawn too, and each operation gets requests valid by the schema and requests that are not
(those must be refused with a documented 4xx, in FastAPI's 422 shape where it is 422).

Requests that change users or tokens could lock the roles out (an IT admin may disable the custodian,
a user revoke their own token): before each operation every user is enabled, given back their roles
and a fresh token.

How many: at least ``FIELDPROOF_SCHEMATHESIS_N`` requests per database (default 5,000: the full run,
about 70–90 s per database here; set it lower for a quick local run). The count of requests actually
sent is asserted. Hypothesis is seeded (``@seed``), so a run, and a failure, reproduces.
"""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from server.auth import service as auth
from server.auth.principal import Role
from server.db import transaction
from tests.server.case_helpers import make_api
from tests.server.conftest import Fleet
from tests.server.test_matrix import World

#: Requests in all for one database (the full run: 5,000).
TARGET = int(os.environ.get("FIELDPROOF_SCHEMATHESIS_N", "5000"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: The signed-in users the requests come from (the matrix's; anonymous is the ``None`` token).
USERS = {
    "inspector1": (Role.INSPECTOR,),
    "handler1": (Role.CASE_HANDLER,),
    "handler2": (Role.CASE_HANDLER,),
    "custodian1": (Role.CUSTODIAN,),
    "legal1": (Role.LEGAL_REVIEWER,),
    "admin1": (Role.IT_ADMIN,),
    "auditor1": (Role.AUDITOR,),
}




def _restore(world: World) -> dict[str, str]:
    """Every user enabled with their roles again, and a fresh API token each (username → token)."""
    tokens = {}
    with transaction(world.api.factory) as s:
        for name, roles in USERS.items():
            user_id = world.api.users[name]
            auth.enable_user(s, user_id=user_id)
            auth.set_roles(s, user_id=user_id, roles=roles)
            tokens[name] = auth.issue_token(
                s, user_id=user_id, name="fuzz", expires_at=datetime.now(UTC) + timedelta(days=1)
            )
    return tokens


def _fuzz(op: Any, *, tokens: dict[str, str], examples: int, round_: int, failures: dict[str, str]) -> int:
    """Up to ``examples`` generated requests to one operation, each as a drawn user, half of them valid
    by the schema and half not (those must be refused with a documented 4xx); returns how many were
    sent. Failures are collected (one per operation and kind), not raised: every operation runs."""
    sent = 0
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @seed(round_)
        @settings(
            max_examples=max(1, examples // 2),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the report names the request
        )
        @given(case=op.as_strategy(mode), who=st.sampled_from([*sorted(tokens), None]))
        def run(case: Any, who: str | None) -> None:
            nonlocal sent
            headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
            sent += 1
            try:
                case.call_and_validate(headers=headers, checks=CHECKS)
            except FailureGroup as exc:  # what schemathesis found, with the curl to reproduce
                kinds = sorted({type(e).__name__ for e in exc.exceptions})
                failures.setdefault(f"{op.label}: {', '.join(kinds)}", f"as {who}: {exc}")

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation without parameters has no invalid input
    return sent


def test_the_schema_holds_for_every_role(tmp_path: Path, database_url: str, fleet: Fleet) -> None:
    world = World(tmp_path, make_api(tmp_path, database_url, fleet))
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", world.api.app)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 50  # the whole API, not a part of it
    sent, rounds = 0, 0
    failures: dict[str, str] = {}
    started = time.monotonic()
    while sent < TARGET and rounds < 5:
        examples = max(10, math.ceil((TARGET - sent) / len(operations) * 1.15))
        for op in operations:
            sent += _fuzz(op, tokens=_restore(world), examples=examples, round_=rounds, failures=failures)
        rounds += 1
    elapsed = time.monotonic() - started
    print(f"schemathesis: {sent} requests in {elapsed:.1f} s over {len(operations)} operations")
    assert failures == {}, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
    assert sent >= TARGET, f"only {sent} requests were sent"
