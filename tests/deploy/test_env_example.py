"""deploy/server.env.example: every variable it names is a real setting, every setting is in it, the
defaults it shows are the code's, and its values are ones the server accepts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from pydantic_settings import BaseSettings

from server.auth.settings import AuthSettings
from server.config import ServerSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "server.env.example"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
PROCESSES = {"migrate", "ingest", "api", "log-sequence", "retention-sweep", "user", "export"}
#: Not ours: uvicorn's own variable for the proxies it trusts (docs/deployment.md).
UVICORN = "FORWARDED_ALLOW_IPS"
MODELS: tuple[tuple[type[BaseSettings], str], ...] = (
    (ServerSettings, "FIELDPROOF_"),
    (AuthSettings, "FIELDPROOF_AUTH_"),
)


@dataclass
class Entry:
    name: str
    value: str
    active: bool  # uncommented: set by the example; else the line shows the default
    comments: list[str]


def entries() -> list[Entry]:
    """Each NAME=value line (commented out or not) with the comment block just above it."""
    out: list[Entry] = []
    block: list[str] = []
    after_assignment = False  # consecutive NAME=value lines share the comment above them
    for line in EXAMPLE.read_text("utf-8").splitlines():
        m = re.fullmatch(r"(#?)([A-Z][A-Z0-9_]*)=(.*)", line)
        if m:
            out.append(Entry(m[2], m[3], not m[1], block))
        elif line.startswith("#"):
            block = [*([] if after_assignment else block), line.lstrip("# ")]
        else:
            assert line.strip() == "", f"neither a comment nor NAME=value: {line!r}"
            block = []
        after_assignment = bool(m)
    return out


def settings_names() -> dict[str, tuple[type[BaseSettings], str]]:
    """FIELDPROOF_* variable → (its settings class, its field)."""
    names = {}
    for model, prefix in MODELS:
        for field in model.model_fields:
            names[prefix + field.upper()] = (model, field)
    return names


def test_every_setting_is_in_the_example_and_nothing_else() -> None:
    named = [e.name for e in entries()]
    assert len(named) == len(set(named)), "a variable is listed twice"
    assert set(named) == {*settings_names(), UVICORN}
    # AuthSettings' variables must not be taken for ServerSettings' (same prefix): no field collides.
    assert not {f"AUTH_{f}" for f in AuthSettings.model_fields} & {
        f.upper() for f in ServerSettings.model_fields
    }


def test_every_entry_says_which_process_reads_it_and_its_default() -> None:
    for e in entries():
        read_by = [c for c in e.comments if c.startswith("read by: ")]
        assert len(read_by) == 1, f"{e.name}: no 'read by:' line"
        processes = {p.strip() for p in read_by[0].removeprefix("read by: ").split(",")}
        assert processes <= PROCESSES, f"{e.name}: {processes - PROCESSES}"
        assert [c for c in e.comments if c.startswith("default: ")], f"{e.name}: no 'default:' line"
        assert any(e.name in c for c in e.comments), f"{e.name}: its comment does not name it"
    by_name = {e.name: e for e in entries()}
    # Spot checks of who reads what, against the code: only ingest talks to the broker, only the API
    # serves HTTP and signs people in.
    for name in ("FIELDPROOF_MQTT_HOST", "FIELDPROOF_SHARE_GROUP", "FIELDPROOF_RECEIVE_MAXIMUM"):
        assert "read by: ingest" in by_name[name].comments
    for name in [n for n in by_name if n.startswith(("FIELDPROOF_AUTH_", "FIELDPROOF_API_"))] + [UVICORN]:
        assert "read by: api" in by_name[name].comments


@pytest.mark.parametrize("entry", [e for e in entries() if not e.active and e.value], ids=lambda e: e.name)
def test_the_defaults_shown_are_the_codes(entry: Entry, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("FIELDPROOF_") or var == UVICORN:
            monkeypatch.delenv(var)
    if entry.name == UVICORN:
        default = uvicorn.Config(app=lambda *_: None).forwarded_allow_ips
        assert entry.value == default
        return
    model, field = settings_names()[entry.name]
    monkeypatch.setenv(entry.name, entry.value)
    assert getattr(model(), field) == model.model_fields[field].default, entry.name
    assert f"default: {entry.value}" in " ".join(entry.comments)


def test_the_examples_values_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("FIELDPROOF_"):
            monkeypatch.delenv(var)
    active = {e.name: e.value for e in entries() if e.active}
    assert {"FIELDPROOF_DATABASE_URL", "FIELDPROOF_CA_DIR"} <= set(active)
    for name, value in active.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # SettingsError if any value is refused
    AuthSettings()
    # The bureau layout: PostgreSQL and the object store, the CA where the units expect it.
    assert settings.db_url.startswith("postgresql+psycopg://")
    assert settings.store_backend == "s3"
    assert str(settings.ca_dir) == "/srv/fieldproof/ca"


def test_the_deployment_doc_lists_every_setting() -> None:
    text = DEPLOYMENT_DOC.read_text("utf-8")
    missing = [n for n in [*settings_names(), UVICORN] if n.removeprefix("FIELDPROOF_") not in text]
    assert not missing, f"docs/deployment.md does not mention {missing}"
