"""Users, sessions, API tokens, lockout and access requests, on both databases, through the API where a
person would use it (and the service where time has to move)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
from argon2 import PasswordHasher
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from server.api.app import create_app
from server.auth import access, service
from server.auth.deps import PrincipalDep, require
from server.auth.errors import (
    ConflictError,
    InvalidInputError,
    NotAllowedError,
    UserExistsError,
    WeakPasswordError,
)
from server.auth.models import AccessRequestEvent, ApiToken, AuthSession, LoginThrottle, User
from server.auth.passwords import Passwords, check_policy
from server.auth.principal import Principal, Role
from server.auth.settings import SESSION_COOKIE, AuthSettings
from server.config import ServerSettings
from server.custody_log.models import CustodyEvent
from server.db import make_engine, session_factory, transaction

PW = "correct horse battery staple"
#: Cheap argon2 parameters for the tests (the server's defaults cost 64 MiB and ~50 ms per hash).
FAST = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
AUTH = AuthSettings(cookie_secure=False, login_max_failures=3)


class CountingHasher(PasswordHasher):
    """Counts verifications, to show that unknown users cost the same work as wrong passwords."""

    verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        CountingHasher.verifications += 1
        return super().verify(hash, password)


@dataclass
class Api:
    """The app over a fresh database, a session factory on it, and clients per user."""

    app: FastAPI
    factory: sessionmaker[Session]
    signed_in: dict[str, TestClient] = field(default_factory=dict)

    def client(self) -> TestClient:
        return TestClient(self.app)

    def user(self, username: str, *roles: Role, password: str = PW) -> int:
        with transaction(self.factory) as s:
            user = service.create_user(s, username=username, password=password, roles=roles, passwords=FAST)
            s.flush()
            return user.id

    def login(self, username: str, *roles: Role, password: str = PW) -> TestClient:
        """A client signed in as a new user with ``roles``."""
        self.user(username, *roles, password=password)
        client = self.client()
        got = client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert got.status_code == 200, got.text
        return client

    def once(self, username: str, *roles: Role) -> TestClient:
        """A client signed in as ``username``, made on first use (for tests that run many examples)."""
        if username not in self.signed_in:
            self.signed_in[username] = self.login(username, *roles)
        return self.signed_in[username]

    def custody(self, kind: str) -> list[dict[str, Any]]:
        with self.factory() as s:
            rows = s.scalars(select(CustodyEvent).where(CustodyEvent.kind == kind).order_by(CustodyEvent.id))
            return [{"actor": r.actor, **json.loads(r.detail)} for r in rows]


def _probe_routes(app: FastAPI) -> None:
    """Two routes written the way a domain engineer uses the interface (server/auth/deps.py)."""

    @app.get("/api/v1/test-probe/any")
    def anyone(principal: PrincipalDep) -> dict[str, str]:
        return {"actor": principal.actor, "via": principal.via}

    @app.get("/api/v1/test-probe/custodian")
    def custodian(principal: Annotated[Principal, Depends(require(Role.CUSTODIAN))]) -> dict[str, str]:
        return {"actor": principal.actor}


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    engine = make_engine(database_url)
    app = create_app(
        ServerSettings(data_dir=tmp_path / "data", database_url=database_url), engine=engine, auth=AUTH
    )
    app.state.passwords = FAST
    _probe_routes(app)
    yield Api(app=app, factory=session_factory(engine))
    engine.dispose()


# -- passwords ---------------------------------------------------------------------------------------


def test_passwords_hash_verify_and_rehash() -> None:
    stored = FAST.hash(PW)
    assert stored.startswith("$argon2id$")
    assert FAST.hash(PW) != stored  # salted
    assert FAST.verify(stored, PW).ok
    assert FAST.verify(stored, PW).new_hash is None
    assert not FAST.verify(stored, PW + "!").ok
    assert not FAST.verify("not a hash", PW).ok
    assert not FAST.verify(None, PW).ok  # the dummy verification

    # Stored with weaker parameters: verified, and a new hash with the current parameters offered.
    old = Passwords(PasswordHasher(time_cost=1, memory_cost=512, parallelism=1)).hash(PW)
    check = FAST.verify(old, PW)
    assert check.ok
    assert check.new_hash is not None
    assert "m=1024" in check.new_hash
    assert FAST.verify(check.new_hash, PW) == type(check)(ok=True)
    assert not FAST.verify(old, "wrong").ok

    with pytest.raises(WeakPasswordError):
        check_policy("short", username="alice")
    with pytest.raises(WeakPasswordError):
        check_policy("Alice.Example", username="alice.example")
    with pytest.raises(WeakPasswordError):
        check_policy("x" * 1025, username="alice")
    check_policy(PW, username="alice")


def test_the_server_default_is_argon2id_with_rfc9106_parameters() -> None:
    from server.auth.passwords import DEFAULT_PASSWORDS

    params = DEFAULT_PASSWORDS.hasher
    assert (params.time_cost, params.memory_cost, params.parallelism) == (3, 65536, 4)


def test_unknown_users_cost_the_same_work_as_wrong_passwords(database_url: str) -> None:
    counting = Passwords(CountingHasher(time_cost=1, memory_cost=1024, parallelism=1))
    factory = session_factory(make_engine(database_url))
    with transaction(factory) as s:
        service.create_user(s, username="alice", password=PW, roles=[Role.INSPECTOR], passwords=counting)
    settings = AuthSettings(login_max_failures=100)
    for name, password in (("alice", "wrong password"), ("nobody", "wrong password"), ("!!", "x")):
        before = CountingHasher.verifications
        with transaction(factory) as s:
            got = service.authenticate(
                s, username=name, password=password, settings=settings, passwords=counting
            )
        assert got is None
        assert CountingHasher.verifications == before + 1, name


# -- login, sessions, tokens -------------------------------------------------------------------------


def test_login_me_logout(api: Api) -> None:
    api.user("alice", Role.INSPECTOR, Role.CASE_HANDLER)
    client = api.client()
    me = client.get("/api/v1/auth/me")
    assert me.status_code == 401
    assert me.headers["www-authenticate"] == "Bearer"

    wrong = client.post("/api/v1/auth/login", json={"username": "alice", "password": "not it at all"})
    unknown = client.post("/api/v1/auth/login", json={"username": "mallory", "password": "not it at all"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "wrong username or password"}

    got = client.post("/api/v1/auth/login", json={"username": "Alice", "password": PW})  # any case
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["user"]["username"] == "alice"
    assert body["user"]["roles"] == ["case-handler", "inspector"]
    assert body["idle_timeout_seconds"] == 1800
    assert SESSION_COOKIE not in got.text  # the secret is in the cookie only
    cookie = got.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "secure" not in cookie  # this app was configured for plain-HTTP tests

    me = client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json()["via"] == "session"
    assert client.get("/api/v1/test-probe/any").json() == {"actor": "user:alice", "via": "session"}
    with api.factory() as s:
        (row,) = s.scalars(select(AuthSession))
        secret = client.cookies[SESSION_COOKIE]
        assert row.token_hash == service.secret_digest(secret)  # only the hash is stored
        assert secret not in row.token_hash

    assert client.post("/api/v1/auth/logout").status_code == 204
    assert client.get("/api/v1/auth/me").status_code == 401
    # The old cookie value, replayed after logout, is dead.
    replay = api.client()
    replay.cookies.set(SESSION_COOKIE, secret)
    assert replay.get("/api/v1/auth/me").status_code == 401


def test_login_upgrades_a_hash_made_with_older_parameters(api: Api) -> None:
    weak = Passwords(PasswordHasher(time_cost=1, memory_cost=512, parallelism=1))
    with transaction(api.factory) as s:
        service.create_user(s, username="alice", password=PW, roles=[Role.INSPECTOR], passwords=weak)
    with api.factory() as s:
        before = s.scalars(select(User.password_hash)).one()
    assert "m=512" in before
    assert (
        api.client().post("/api/v1/auth/login", json={"username": "alice", "password": PW}).status_code == 200
    )
    with api.factory() as s:
        after = s.scalars(select(User.password_hash)).one()
    assert "m=1024" in after
    assert FAST.verify(after, PW).ok
    assert (
        api.client().post("/api/v1/auth/login", json={"username": "alice", "password": PW}).status_code == 200
    )


def test_the_cookie_is_secure_by_default(tmp_path: Path, database_url: str) -> None:
    app = create_app(ServerSettings(data_dir=tmp_path / "data", database_url=database_url))
    app.state.passwords = FAST
    with transaction(app.state.session_factory) as s:
        service.create_user(s, username="alice", password=PW, roles=[Role.AUDITOR], passwords=FAST)
    got = TestClient(app).post("/api/v1/auth/login", json={"username": "alice", "password": PW})
    assert got.status_code == 200
    assert "; secure" in got.headers["set-cookie"].lower()
    app.state.engine.dispose()


def test_sessions_expire_when_idle_and_at_their_end(api: Api) -> None:
    client = api.login("alice", Role.INSPECTOR)
    assert client.get("/api/v1/auth/me").status_code == 200
    now = datetime.now(UTC)
    with transaction(api.factory) as s:  # idle for longer than the timeout
        s.execute(update(AuthSession).values(last_seen_at=now - timedelta(minutes=31)))
    assert client.get("/api/v1/auth/me").status_code == 401

    client = api.client()
    assert client.post("/api/v1/auth/login", json={"username": "alice", "password": PW}).status_code == 200
    with transaction(api.factory) as s:  # active, but past the session's absolute end
        s.execute(update(AuthSession).where(AuthSession.revoked_at.is_(None)).values(expires_at=now))
    assert client.get("/api/v1/auth/me").status_code == 401

    # Activity moves the idle clock (at most once a minute, to spare the database).
    with transaction(api.factory) as s:
        user = s.scalars(select(User).where(User.username == "alice")).one()
        secret, _ = service.start_session(s, user=user, settings=AUTH, now=now)
    for minutes in (20, 40, 60):  # each within 30 minutes of the last
        with transaction(api.factory) as s:
            assert service.resolve_session(
                s, secret=secret, settings=AUTH, now=now + timedelta(minutes=minutes)
            )
    with transaction(api.factory) as s:
        assert (
            service.resolve_session(s, secret=secret, settings=AUTH, now=now + timedelta(minutes=91)) is None
        )


def test_api_tokens(api: Api) -> None:
    client = api.login("alice", Role.CUSTODIAN)
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    got = client.post("/api/v1/auth/tokens", json={"name": "export script", "expires_at": later})
    assert got.status_code == 201, got.text
    issued = got.json()
    secret = issued["token"]
    assert secret.startswith("fpt_")
    assert issued["prefix"] == secret[:12]

    bearer = api.client()
    headers = {"Authorization": f"Bearer {secret}"}
    me = bearer.get("/api/v1/auth/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["via"] == "token"
    assert bearer.get("/api/v1/test-probe/custodian", headers=headers).json() == {"actor": "user:alice"}
    # A token cannot mint more tokens (a leaked one could otherwise renew itself for ever).
    assert (
        bearer.post(
            "/api/v1/auth/tokens", headers=headers, json={"name": "x", "expires_at": later}
        ).status_code
        == 403
    )

    listed = client.get("/api/v1/auth/tokens").json()
    assert [t["name"] for t in listed] == ["export script"]
    assert "token" not in listed[0]
    assert listed[0]["last_used_at"] is not None
    with api.factory() as s:
        (row,) = s.scalars(select(ApiToken))
        assert row.token_hash == service.secret_digest(secret)

    # A wrong or malformed Authorization header is refused, not passed over for the cookie.
    assert client.get("/api/v1/auth/me", headers={"Authorization": "Bearer fpt_nope"}).status_code == 401
    assert client.get("/api/v1/auth/me", headers={"Authorization": "Basic YWxpY2U6eA=="}).status_code == 401
    assert client.get("/api/v1/auth/me", headers={"Authorization": "Bearer "}).status_code == 401

    # Someone else's token cannot be revoked by id (404), one's own can: at once.
    other = api.login("bob", Role.CUSTODIAN)
    assert other.delete(f"/api/v1/auth/tokens/{issued['id']}").status_code == 404
    assert client.delete(f"/api/v1/auth/tokens/{issued['id']}").status_code == 204
    assert bearer.get("/api/v1/auth/me", headers=headers).status_code == 401
    assert client.get("/api/v1/auth/tokens").json()[0]["revoked_at"] is not None

    # Expired tokens stop working; expiries in the past or too far ahead are refused.
    second = client.post("/api/v1/auth/tokens", json={"name": "short", "expires_at": later}).json()
    with transaction(api.factory) as s:
        s.execute(update(ApiToken).where(ApiToken.id == second["id"]).values(expires_at=datetime.now(UTC)))
    assert (
        bearer.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {second['token']}"}).status_code
        == 401
    )
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    for expires_at in (past, far, "2027-01-01T00:00:00"):  # the last: no time zone
        bad = client.post("/api/v1/auth/tokens", json={"name": "x", "expires_at": expires_at})
        assert bad.status_code == 422, expires_at
        assert bad.json()["detail"][0]["loc"] == ["body", "expires_at"]


def test_401_without_credentials_403_without_the_role(api: Api) -> None:
    anonymous = api.client()
    for path in (
        "/api/v1/users",
        "/api/v1/auth/tokens",
        "/api/v1/access-requests",
        "/api/v1/test-probe/custodian",
    ):
        got = anonymous.get(path)
        assert got.status_code == 401, path
        assert got.headers["www-authenticate"] == "Bearer"
    auditor = api.login("audrey", Role.AUDITOR)
    assert auditor.get("/api/v1/users").status_code == 403
    assert (
        auditor.post(
            "/api/v1/users", json={"username": "x1x", "password": PW, "roles": ["auditor"]}
        ).status_code
        == 403
    )
    assert auditor.get("/api/v1/test-probe/custodian").status_code == 403
    assert auditor.get("/api/v1/test-probe/any").status_code == 200


# -- users -------------------------------------------------------------------------------------------


def test_users_are_managed_by_it_admins_only(api: Api) -> None:
    admin = api.login("root", Role.IT_ADMIN)
    made = admin.post(
        "/api/v1/users",
        json={
            "username": "wang.fang",
            "display_name": "王芳",
            "password": PW,
            "roles": ["inspector", "case-handler"],
            "officer_id": 12,
        },
    )
    assert made.status_code == 201, made.text
    user = made.json()
    assert user["display_name"] == "王芳"
    assert user["roles"] == ["case-handler", "inspector"]
    assert user["officer_id"] == 12
    assert user["active"] is True

    again = admin.post("/api/v1/users", json={"username": "wang.fang", "password": PW, "roles": ["auditor"]})
    assert again.status_code == 409
    for body in (
        {"username": "weak", "password": "short", "roles": ["auditor"]},
        {"username": "samename.user", "password": "samename.user", "roles": ["auditor"]},
        {"username": "noroles", "password": PW, "roles": []},
        {"username": "badrole", "password": PW, "roles": ["superuser"]},
        {"username": "Upper", "password": PW, "roles": ["auditor"]},
        {"username": "extra", "password": PW, "roles": ["auditor"], "admin": True},
    ):
        assert admin.post("/api/v1/users", json=body).status_code == 422, body

    assert [u["username"] for u in admin.get("/api/v1/users").json()] == ["root", "wang.fang"]
    changed = admin.put(f"/api/v1/users/{user['id']}/roles", json={"roles": ["custodian"]})
    assert changed.json()["roles"] == ["custodian"]

    # Disabling ends the user's sessions and tokens at once, and refuses their logins.
    wang = api.client()
    assert wang.post("/api/v1/auth/login", json={"username": "wang.fang", "password": PW}).status_code == 200
    assert wang.get("/api/v1/test-probe/custodian").status_code == 200  # the new roles apply at once
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    token = wang.post("/api/v1/auth/tokens", json={"name": "t", "expires_at": later}).json()["token"]
    assert admin.post(f"/api/v1/users/{user['id']}/disable").json()["active"] is False
    assert wang.get("/api/v1/auth/me").status_code == 401
    assert (
        api.client().get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )
    relogin = api.client().post("/api/v1/auth/login", json={"username": "wang.fang", "password": PW})
    assert relogin.status_code == 401
    assert relogin.json() == {"detail": "wrong username or password"}  # no hint that the user exists
    assert admin.post(f"/api/v1/users/{user['id']}/enable").json()["active"] is True
    assert (
        api.client().post("/api/v1/auth/login", json={"username": "wang.fang", "password": PW}).status_code
        == 200
    )

    # The bureau never loses its last IT admin.
    root_id = admin.get("/api/v1/auth/me").json()["id"]
    assert admin.post(f"/api/v1/users/{root_id}/disable").status_code == 409
    assert admin.put(f"/api/v1/users/{root_id}/roles", json={"roles": ["auditor"]}).status_code == 409
    assert admin.get("/api/v1/users/999999").status_code == 404

    # An IT admin resets a password: the user's sessions end, the new password works.
    assert admin.put(f"/api/v1/users/{user['id']}/password", json={"password": PW + " 2"}).status_code == 204
    assert (
        api.client().post("/api/v1/auth/login", json={"username": "wang.fang", "password": PW}).status_code
        == 401
    )
    assert (
        api.client()
        .post("/api/v1/auth/login", json={"username": "wang.fang", "password": PW + " 2"})
        .status_code
        == 200
    )


def test_user_service_refusals(api: Api) -> None:
    with transaction(api.factory) as s:
        service.create_user(s, username="alice", password=PW, roles=[Role.AUDITOR], passwords=FAST)
    with transaction(api.factory) as s:
        with pytest.raises(UserExistsError):
            service.create_user(s, username="alice", password=PW, roles=[Role.AUDITOR], passwords=FAST)
        with pytest.raises(InvalidInputError, match="username"):
            service.create_user(s, username="a b", password=PW, roles=[Role.AUDITOR], passwords=FAST)
        with pytest.raises(InvalidInputError, match="role"):
            service.create_user(s, username="bob", password=PW, roles=[], passwords=FAST)
        with pytest.raises(WeakPasswordError):
            service.create_user(s, username="bob", password="bob", roles=[Role.AUDITOR], passwords=FAST)


# -- lockout -----------------------------------------------------------------------------------------


def test_lockout_after_repeated_failures_for_existing_and_unknown_names(api: Api) -> None:
    api.user("alice", Role.INSPECTOR)
    client = api.client()
    answers: dict[str, list[int]] = {}
    for name in ("alice", "nobody"):
        codes = [
            client.post(
                "/api/v1/auth/login", json={"username": name, "password": "wrong password"}
            ).status_code
            for _ in range(AUTH.login_max_failures)
        ]
        locked = client.post("/api/v1/auth/login", json={"username": name, "password": PW})
        codes.append(locked.status_code)
        answers[name] = codes
        assert locked.headers["retry-after"] == str(int(AUTH.login_lockout.total_seconds()))
    # The same answers whether the user exists or not; even the right password waits out the lockout.
    assert answers["alice"] == answers["nobody"] == [401, 401, 401, 429]
    with api.factory() as s:
        assert {t.username for t in s.scalars(select(LoginThrottle))} == {"alice", "nobody"}

    # Other usernames are not affected; after the lockout the right password works and clears the count.
    api.user("bob", Role.INSPECTOR)
    assert client.post("/api/v1/auth/login", json={"username": "bob", "password": PW}).status_code == 200
    with transaction(api.factory) as s:
        s.execute(update(LoginThrottle).values(locked_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert client.post("/api/v1/auth/login", json={"username": "alice", "password": PW}).status_code == 200
    with api.factory() as s:
        assert s.get(LoginThrottle, "alice") is None


def test_failures_outside_the_window_are_forgotten(api: Api) -> None:
    api.user("alice", Role.INSPECTOR)
    now = datetime.now(UTC)
    for minutes in (0, 10, 30, 40):  # never three within 15 minutes
        with transaction(api.factory) as s:
            got = service.authenticate(
                s,
                username="alice",
                password="nope",
                settings=AUTH,
                passwords=FAST,
                now=now + timedelta(minutes=minutes),
            )
            assert got is None
    with transaction(api.factory) as s:
        user = service.authenticate(
            s, username="alice", password=PW, settings=AUTH, passwords=FAST, now=now + timedelta(minutes=41)
        )
        assert user is not None


# -- access requests ---------------------------------------------------------------------------------


def _ask(client: TestClient, **overrides: Any) -> Any:
    body = {
        "target_kind": "segment",
        "target_id": "REC-0001:17",
        "restriction": "personal-privacy",
        "purpose": "比对被检查单位工资表中的员工身份证号 (identity numbers in the payroll)",
        "until": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
    } | overrides
    return client.post("/api/v1/access-requests", json=body)


def test_access_request_lifecycle(api: Api) -> None:
    inspector = api.login("li.ming", Role.INSPECTOR, Role.CUSTODIAN)  # a custodian too: still not for himself
    reviewer = api.login("zhao.lei", Role.LEGAL_REVIEWER)
    custodian = api.login("chen.jing", Role.CUSTODIAN)
    auditor = api.login("audrey", Role.AUDITOR)
    admin = api.login("root", Role.IT_ADMIN)
    other = api.login("wu.qiang", Role.CASE_HANDLER)

    assert _ask(inspector, purpose="   ").status_code == 422  # a purpose is required
    assert _ask(inspector, purpose="").status_code == 422
    assert _ask(inspector, target_kind="device").status_code == 422
    assert _ask(inspector, restriction="secret").status_code == 422
    assert _ask(inspector, until=(datetime.now(UTC) + timedelta(days=91)).isoformat()).status_code == 422
    assert _ask(inspector, until=(datetime.now(UTC) - timedelta(minutes=1)).isoformat()).status_code == 422
    assert _ask(admin).status_code == 403  # IT admins and auditors never open evidence
    assert _ask(auditor).status_code == 403

    made = _ask(inspector)
    assert made.status_code == 201, made.text
    req = made.json()
    assert req["status"] == "pending"
    assert req["requester"] == "li.ming"
    assert [e["kind"] for e in req["history"]] == ["requested"]
    assert _ask(inspector).status_code == 409  # one pending request per record at a time
    rid = req["id"]

    # Who sees what.
    assert [r["id"] for r in inspector.get("/api/v1/access-requests").json()] == [rid]
    assert other.get("/api/v1/access-requests").json() == []
    assert other.get(f"/api/v1/access-requests/{rid}").status_code == 404
    assert other.get("/api/v1/access-requests", params={"scope": "all"}).status_code == 403
    assert [r["id"] for r in auditor.get("/api/v1/access-requests", params={"scope": "all"}).json()] == [rid]
    assert [
        r["id"] for r in reviewer.get("/api/v1/access-requests", params={"scope": "to-decide"}).json()
    ] == [rid]
    assert inspector.get("/api/v1/access-requests", params={"scope": "to-decide"}).json() == []

    # Nobody decides their own request, whatever their roles; auditors and others decide nothing.
    own = inspector.post(f"/api/v1/access-requests/{rid}/approve", json={})
    assert own.status_code == 403
    assert "own" in own.json()["detail"]
    assert auditor.post(f"/api/v1/access-requests/{rid}/approve", json={}).status_code == 403
    assert other.post(f"/api/v1/access-requests/{rid}/approve", json={}).status_code == 403
    with api.factory() as s:
        principal = _principal(s, "li.ming")
        assert access.granted_access(s, principal, target_kind="segment", target_id="REC-0001:17") is None

    # Approved for less time than asked (never more).
    asked = datetime.fromisoformat(req["requested_until"])
    too_long = reviewer.post(
        f"/api/v1/access-requests/{rid}/approve", json={"until": (asked + timedelta(hours=1)).isoformat()}
    )
    assert too_long.status_code == 422
    until = asked - timedelta(days=2)
    approved = reviewer.post(
        f"/api/v1/access-requests/{rid}/approve", json={"until": until.isoformat(), "note": "两天, 仅限比对"}
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "approved"
    assert body["decided_by"] == "zhao.lei"
    assert datetime.fromisoformat(body["granted_until"]) == until
    assert [e["kind"] for e in body["history"]] == ["requested", "approved"]
    assert custodian.post(f"/api/v1/access-requests/{rid}/approve", json={}).status_code == 409  # decided

    (granted,) = api.custody("access-granted")
    assert granted["actor"] == "user:zhao.lei"
    assert granted["requester"] == "user:li.ming"
    assert granted["purpose"] == req["purpose"]
    assert datetime.fromisoformat(granted["until"]) == until
    assert (granted["target_kind"], granted["target_id"]) == ("segment", "REC-0001:17")
    assert granted["access_request"] == rid

    with api.factory() as s:
        li, wu = _principal(s, "li.ming"), _principal(s, "wu.qiang")
        grant = access.granted_access(s, li, target_kind="segment", target_id="REC-0001:17")
        assert grant is not None
        assert grant.id == rid
        assert access.granted_access(s, li, target_kind="segment", target_id="REC-0001:18") is None
        assert access.granted_access(s, li, target_kind="recording", target_id="REC-0001:17") is None
        assert access.granted_access(s, wu, target_kind="segment", target_id="REC-0001:17") is None
        assert (
            access.granted_access(
                s, li, target_kind="segment", target_id="REC-0001:17", restriction="state-secret"
            )
            is None
        )
        # The expiry is honoured by time, before anyone marks the request expired.
        assert access.granted_access(
            s, li, target_kind="segment", target_id="REC-0001:17", now=until - timedelta(seconds=1)
        )
        assert access.granted_access(s, li, target_kind="segment", target_id="REC-0001:17", now=until) is None

    # The requester gives the access up: access-revoked, with the purpose.
    withdrawn = inspector.post(f"/api/v1/access-requests/{rid}/withdraw")
    assert withdrawn.json()["status"] == "withdrawn"
    (revoked,) = api.custody("access-revoked")
    assert revoked["decision"] == "withdrawn"
    assert revoked["actor"] == "user:li.ming"
    assert revoked["purpose"] == req["purpose"]
    with api.factory() as s:
        assert (
            access.granted_access(s, _principal(s, "li.ming"), target_kind="segment", target_id="REC-0001:17")
            is None
        )
    assert inspector.post(f"/api/v1/access-requests/{rid}/withdraw").status_code == 409


def test_refusal_and_revocation(api: Api) -> None:
    inspector = api.login("li.ming", Role.INSPECTOR)
    custodian = api.login("chen.jing", Role.CUSTODIAN)
    reviewer = api.login("zhao.lei", Role.LEGAL_REVIEWER)

    first = _ask(
        inspector, restriction="trade-secret", target_kind="case", target_id="津人社监察〔2026〕17号"
    ).json()
    assert (
        custodian.post(f"/api/v1/access-requests/{first['id']}/refuse", json={"note": " "}).status_code == 422
    )
    assert custodian.post(f"/api/v1/access-requests/{first['id']}/refuse", json={}).status_code == 422
    refused = custodian.post(f"/api/v1/access-requests/{first['id']}/refuse", json={"note": "与本案无关"})
    assert refused.json()["status"] == "refused"
    assert refused.json()["decision_note"] == "与本案无关"
    assert inspector.post(f"/api/v1/access-requests/{first['id']}/withdraw").status_code == 409

    second = _ask(
        inspector, restriction="trade-secret", target_kind="case", target_id="津人社监察〔2026〕17号"
    ).json()
    assert reviewer.post(f"/api/v1/access-requests/{second['id']}/approve", json={}).status_code == 200
    assert (
        inspector.post(f"/api/v1/access-requests/{second['id']}/revoke", json={"note": "x"}).status_code
        == 403
    )
    revoked = custodian.post(f"/api/v1/access-requests/{second['id']}/revoke", json={"note": "案件已结案"})
    assert revoked.json()["status"] == "revoked"
    assert [e["kind"] for e in revoked.json()["history"]] == ["requested", "approved", "revoked"]
    assert [e["actor"] for e in revoked.json()["history"]] == ["li.ming", "zhao.lei", "chen.jing"]

    decisions = [(e["decision"], e["actor"]) for e in api.custody("access-revoked")]
    assert decisions == [("refused", "user:chen.jing"), ("revoked", "user:chen.jing")]
    assert [e["actor"] for e in api.custody("access-granted")] == ["user:zhao.lei"]
    assert all(e["purpose"] == first["purpose"] for e in api.custody("access-revoked"))


def test_expiry_of_requests_and_grants(api: Api) -> None:
    for name, role in (("li.ming", Role.INSPECTOR), ("zhao.lei", Role.LEGAL_REVIEWER)):
        api.user(name, role)
    now = datetime.now(UTC)
    with transaction(api.factory) as s:
        li, zhao = _principal(s, "li.ming"), _principal(s, "zhao.lei")
        kw: dict[str, Any] = {"target_kind": "recording", "restriction": "state-secret", "purpose": "p"}
        granted = access.request_access(
            s, principal=li, target_id="R1", until=now + timedelta(days=1), now=now, **kw
        )
        pending = access.request_access(
            s, principal=li, target_id="R2", until=now + timedelta(days=1), now=now, **kw
        )
        access.approve_request(s, principal=zhao, request_id=granted.id, now=now)
        ids = (granted.id, pending.id)
    later = now + timedelta(days=1, seconds=1)
    with transaction(api.factory) as s:
        li = _principal(s, "li.ming")
        assert access.granted_access(s, li, target_kind="recording", target_id="R1", now=now) is not None
        assert access.granted_access(s, li, target_kind="recording", target_id="R1", now=later) is None
    with pytest.raises(ConflictError, match="expired"), transaction(api.factory) as s:  # too late to decide
        access.approve_request(s, principal=_principal(s, "zhao.lei"), request_id=ids[1], now=later)
    with transaction(api.factory) as s:
        assert access.expire_due(s, now=later) == 2
        assert access.expire_due(s, now=later) == 0
        statuses = [
            access.get_request(s, principal=_principal(s, "li.ming"), request_id=i).status for i in ids
        ]
        assert statuses == ["expired", "expired"]
    ended = api.custody("access-revoked")
    assert [(e["decision"], e["actor"], e["access_request"]) for e in ended] == [
        ("expired", "server:access-expiry", ids[0])  # only the grant ended access
    ]
    with transaction(api.factory) as s, pytest.raises(NotAllowedError):
        access.approve_request(s, principal=_principal(s, "li.ming"), request_id=ids[1], now=later)


def test_access_history_is_append_only(api: Api) -> None:
    api.user("li.ming", Role.INSPECTOR)
    with transaction(api.factory) as s:
        access.request_access(
            s,
            principal=_principal(s, "li.ming"),
            target_kind="text-record",
            target_id="T-1",
            restriction="personal-privacy",
            purpose="p",
            until=datetime.now(UTC) + timedelta(days=1),
        )
    for stmt in (update(AccessRequestEvent).values(note="rewritten"), delete(AccessRequestEvent)):
        with pytest.raises(DBAPIError, match="append-only"), transaction(api.factory) as s:
            s.execute(stmt)


def _principal(s: Session, username: str) -> Principal:
    user = s.scalars(select(User).where(User.username == username)).one()
    return service.principal_of(user, via="session")


# -- what a fuzzer would send ------------------------------------------------------------------------


NASTY: list[Any] = [
    None,
    [],
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    " ",
    "x" * 5000,
    -1,
    0,
    2**63,
    1e308,
    True,
    {"$gt": ""},
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "2026-13-45T99:00:00Z",
]


def _raw(client: TestClient, method: str, path: str, body: Any) -> int:
    # json.dumps keeps "\ud800" as an escape, which a Python client could not encode itself.
    content = json.dumps(body).encode()
    return client.request(
        method, path, content=content, headers={"content-type": "application/json"}
    ).status_code


def test_no_input_makes_a_server_error(api: Api) -> None:
    api.user("li.ming", Role.INSPECTOR)
    root = api.login("root", Role.IT_ADMIN, Role.CUSTODIAN)
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    bodies = {
        "/api/v1/auth/login": {"username": "li.ming", "password": "wrong password"},
        "/api/v1/users": {"username": "new.user", "password": PW, "roles": ["auditor"], "display_name": "N"},
        "/api/v1/auth/tokens": {"name": "t", "expires_at": later},
        "/api/v1/access-requests": {
            "target_kind": "case",
            "target_id": "C-1",
            "restriction": "trade-secret",
            "purpose": "p",
            "until": later,
        },
    }
    for path, good in bodies.items():
        for name in good:
            for value in NASTY:
                code = _raw(root, "POST", path, good | {name: value})
                assert code < 500, (path, name, value)
        assert _raw(root, "POST", path, NASTY) < 500
    for path in (
        "/api/v1/users/0",
        "/api/v1/users/-1",
        "/api/v1/users/99999999999999999999",
        "/api/v1/users/x",
    ):
        assert root.get(path).status_code == 422, path
    assert root.get("/api/v1/access-requests", params={"scope": "everything"}).status_code == 422
    for header in ("Bearer \x7f", "Bearer " + "a" * 10_000, "bearer fpt_" + "\u00ff" * 40, "x"):
        probe = api.client()
        probe.cookies.set(SESSION_COOKIE, "a" * 5000)
        raw = {"Authorization": header.encode("latin-1")}  # as a client may send it: any octets
        assert probe.get("/api/v1/auth/me", headers=raw).status_code == 401  # type: ignore[dict-item]


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.dictionaries(
        st.sampled_from(["username", "password", "display_name", "roles", "officer_id", "extra"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
            lambda children: st.lists(children, max_size=3),
            max_leaves=5,
        ),
    )
)
def test_fuzzed_user_and_login_bodies(api: Api, body: dict[str, Any]) -> None:
    assert _raw(api.once("root", Role.IT_ADMIN), "POST", "/api/v1/users", body) < 500
    assert _raw(api.client(), "POST", "/api/v1/auth/login", body) < 500


def test_the_openapi_document_declares_auth_answers(api: Api) -> None:
    spec = api.client().get("/api/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["apiToken"] == {"type": "http", "scheme": "bearer", "description": "an API token: fpt_…"}
    assert schemes["session"]["in"] == "cookie"
    assert schemes["session"]["name"] == SESSION_COOKIE
    for path, operations in spec["paths"].items():
        if not path.startswith(("/api/v1/auth", "/api/v1/users", "/api/v1/access-requests")):
            continue
        for method, op in operations.items():
            if path not in ("/api/v1/auth/login", "/api/v1/auth/logout"):
                assert "401" in op["responses"], (method, path)
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in ref:
                model = spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
                assert model.get("additionalProperties") is False, (method, path)


# -- the bootstrap command ---------------------------------------------------------------------------


def test_the_first_it_admin_from_the_command_line(tmp_path: Path, api: Api, database_url: str) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text(PW + "\n")
    base = [sys.executable, "-m", "fieldproof", "server", "user"]
    db = ["--database-url", database_url, "--data-dir", str(tmp_path / "data")]
    cmd = [*base, "add", "root", "--role", "it-admin", "--role", "auditor", "--display-name", "系统管理员"]
    out = subprocess.run(
        [*cmd, "--password-file", str(password_file), *db], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "user root created" in out.stdout
    assert PW not in out.stdout + out.stderr

    client = api.client()
    got = client.post("/api/v1/auth/login", json={"username": "root", "password": PW})
    assert got.status_code == 200
    assert got.json()["user"]["roles"] == ["auditor", "it-admin"]
    assert got.json()["user"]["display_name"] == "系统管理员"
    assert client.get("/api/v1/users").status_code == 200

    again = subprocess.run(
        [*base, "add", "root", "--role", "it-admin", "--password-file", str(password_file), *db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2
    assert "exists already" in again.stderr
    weak = tmp_path / "weak"
    weak.write_text("short\n")
    refused = subprocess.run(
        [*base, "add", "bob", "--role", "auditor", "--password-file", str(weak), *db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "at least 12 characters" in refused.stderr

    # A forgotten admin password is reset from the shell too; the old sessions end.
    password_file.write_text(PW + " new\n")
    reset = subprocess.run(
        [*base, "set-password", "root", "--password-file", str(password_file), *db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reset.returncode == 0, reset.stderr
    assert client.get("/api/v1/users").status_code == 401
    assert (
        client.post("/api/v1/auth/login", json={"username": "root", "password": PW + " new"}).status_code
        == 200
    )
