"""The pages' rows of the role × endpoint matrix (tests/server/test_matrix.py runs them with its World:
the same users, case A, footage of REC-0001). A page answers as the API route that shows the same
thing: 404 for what the user may not see, 403 for what their roles refuse; where the API answers 401,
a page sends the browser to sign in (303); a successful form post redirects (303)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from tests.server.case_helpers import CASE_A

_SERIAL = itertools.count(1)
NO_REDIRECT = {"follow_redirects": False}
CASE_Q = quote(CASE_A, safe="")

Expect = Callable[..., dict[str, int]]
WebRow = tuple[str, str, Callable[[Any, str], tuple[str, dict[str, Any]]], dict[str, int]]


def _get(url: str) -> Callable[[Any, str], tuple[str, dict[str, Any]]]:
    return lambda w, role: (url.format(w=w), dict(NO_REDIRECT))


def _post(
    url: str, data: Callable[[Any], dict[str, Any]]
) -> Callable[[Any, str], tuple[str, dict[str, Any]]]:
    return lambda w, role: (url.format(w=w), {"data": data(w), **NO_REDIRECT})


def _fresh_device(w: Any) -> str:
    return str(w.api.fleet.enroll_recorder())


def web_rows(expect: Expect, evidence: Expect) -> list[WebRow]:
    """The rows, built with the matrix's own ``expect`` and ``evidence`` helpers."""
    signed_in = {"anonymous": 303}
    readers = {**evidence(), **signed_in}
    return [
        ("GET", "/login", _get("/login"), expect(200, anonymous=200)),
        (
            "POST",
            "/login",
            _post("/login", lambda w: {"username": f"nobody{next(_SERIAL)}", "password": "wrong password!"}),
            expect(401, anonymous=401),
        ),
        ("POST", "/logout", _post("/logout", lambda w: {}), expect(303, anonymous=303)),
        ("GET", "/", _get("/"), expect(200, **signed_in)),
        ("GET", "/static/{name}", _get("/static/web.css"), expect(200, anonymous=200)),
        # -- case handler's pages: the case file's rules -------------------------------------------
        ("GET", "/cases", _get("/cases"), expect(403, **{**evidence(), "other_handler": 200, **signed_in})),
        ("GET", "/case", _get(f"/case?number={CASE_Q}"), {**evidence(inspector=404), **signed_in}),
        ("GET", "/play/{device}/{recording}", _get("/play/REC-0001/{w.recording}"), readers),
        (
            "POST",
            "/link",
            _post(
                "/link",
                lambda w: {
                    "device": "REC-0001",
                    "seq": str(w.seq),
                    "recording": w.recording,
                    "case_number": "",
                    "proof": "现场检查",
                    "reason": "更正证明对象",
                },
            ),
            expect(403, inspector=303, handler=303, other_handler=404, **signed_in),
        ),
        (
            "GET",
            "/subjects/{subject_id}",
            _get("/subjects/{w.subject}"),
            expect(403, inspector=200, handler=200, other_handler=200, custodian=200, legal=200, **signed_in),
        ),
        (
            "GET",
            "/footage",
            _get("/footage"),
            expect(403, **{**evidence(), "other_handler": 200, **signed_in}),
        ),
        # -- custodian's pages ---------------------------------------------------------------------
        ("GET", "/custody", _get("/custody"), expect(403, custodian=200, auditor=200, **signed_in)),
        (
            "GET",
            "/custody/case",
            _get(f"/custody/case?number={CASE_Q}"),
            {**evidence(inspector=404), **signed_in},
        ),
        (
            "GET",
            "/custody/device/{device}",
            _get("/custody/device/REC-0001"),
            expect(403, custodian=200, auditor=200, **signed_in),
        ),
        ("GET", "/custody-log", _get("/custody-log"), expect(403, custodian=200, auditor=200, **signed_in)),
        (
            "POST",
            "/export",
            _post("/export", lambda w: {"number": CASE_A}),
            expect(403, custodian=202, **signed_in),
        ),
        # Someone else's (or no) job: 404 for custodians, 403 for the rest.
        (
            "GET",
            "/export-jobs/{job_id}",
            _get("/export-jobs/0123456789abcdef"),
            expect(403, custodian=404, **signed_in),
        ),
        # -- IT -----------------------------------------------------------------------------------
        ("GET", "/fleet", _get("/fleet"), expect(403, admin=200, **signed_in)),
        (
            "POST",
            "/fleet/enrol",
            _post(
                "/fleet/enrol",
                lambda w: {"device": f"REC-M{next(_SERIAL):03d}{os.getpid() % 1000:03d}", "role": "recorder"},
            ),
            expect(403, admin=303, **signed_in),
        ),
        (
            "POST",
            "/fleet/assign",
            _post(
                "/fleet/assign",
                lambda w: {
                    "recorder": f"REC-W{next(_SERIAL):03d}{os.getpid() % 1000:03d}",
                    "officer_id": w.officer_id,
                    "valid_from": "2026-01-01",
                },
            ),
            expect(403, admin=303, **signed_in),
        ),
        (
            "GET",
            "/fleet/{device}/bundle",
            _get("/fleet/REC-0002/bundle"),
            expect(403, admin=200, **signed_in),
        ),
        (
            "POST",
            "/fleet/{device}/revoke",
            lambda w, role: (f"/fleet/{_fresh_device(w)}/revoke", {"data": {}, **NO_REDIRECT}),
            expect(403, admin=303, **signed_in),
        ),
        # -- oversight and access requests --------------------------------------------------------------
        (
            "GET",
            "/oversight",
            _get("/oversight"),
            expect(403, custodian=200, legal=200, auditor=200, **signed_in),
        ),
        ("GET", "/access-requests", _get("/access-requests"), expect(200, **signed_in)),
        (
            "POST",
            "/access-requests",
            _post(
                "/access-requests",
                lambda w: {
                    "target_kind": "case",
                    "target_id": f"津人社监察〔2026〕{900 + next(_SERIAL)}号",
                    "restriction": "personal-privacy",
                    "purpose": "复核",
                },
            ),
            expect(303, admin=403, auditor=403, **signed_in),
        ),
        (
            "GET",
            "/access-requests/{request_id}",
            lambda w, role: (f"/access-requests/{w.pending_request()}", dict(NO_REDIRECT)),
            expect(404, custodian=200, legal=200, auditor=200, **signed_in),
        ),
        (
            "POST",
            "/access-requests/{request_id}/decide",
            lambda w, role: (
                f"/access-requests/{w.pending_request()}/decide",
                {"data": {"decision": "approve"}, **NO_REDIRECT},
            ),
            expect(403, custodian=303, legal=303, **signed_in),
        ),
    ]
