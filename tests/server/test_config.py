"""Settings: defaults, environment, refusals with a clear message — and the commands that use them."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import main
from server.config import ServerSettings, load_settings
from server.db import head_revision
from server.errors import SettingsError


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FIELDPROOF_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("FIELDPROOF_MQTT_PORT", "18883")
    s = load_settings()
    assert s.db_url == f"sqlite:///{tmp_path / 'd' / 'fieldproof.db'}"
    assert s.store_root == tmp_path / "d" / "store"
    assert s.staging_dir == tmp_path / "d" / "staging"
    assert (s.mqtt_port, s.topic_prefix, s.share_group) == (18883, "fieldproof/v1", "ingest")
    assert load_settings(data_dir=tmp_path / "other", database_url=None).data_dir == tmp_path / "other"


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("data_dir", "relative/dir", "absolute"),
        ("topic_prefix", "fieldproof/#", "wildcards"),
        ("topic_prefix", "/fieldproof", "wildcards"),
        ("share_group", "a/b", "one topic level"),
        ("database_url", "mysql://x", "not supported"),
        ("mqtt_port", "0", "greater than or equal to 1"),
        ("typo_field", "x", "Extra inputs"),
    ],
)
def test_unusable_settings_are_refused(field: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        load_settings(**{field: value})


def test_ca_dir_is_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="FIELDPROOF_CA_DIR"):
        ServerSettings(data_dir=tmp_path).check_ca_dir()
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "root-ca.pem").write_text("x")
    with pytest.raises(SettingsError, match=r"lacks ca-chain.pem, crl.pem"):
        ServerSettings(data_dir=tmp_path, ca_dir=tmp_path / "ca").check_ca_dir()


def test_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FIELDPROOF_DATA_DIR", str(tmp_path / "data"))
    assert main(["migrate"]) == 0
    assert f"database at migration {head_revision()}" in capsys.readouterr().out
    assert main(["migrate"]) == 0  # a second run changes nothing
    assert main(["ingest"]) == 2  # no CA directory: a sentence, not a traceback
    assert "FIELDPROOF_CA_DIR" in capsys.readouterr().err
    monkeypatch.setenv("FIELDPROOF_DATABASE_URL", "postgres://nope")
    assert main(["migrate"]) == 2
    assert "not supported" in capsys.readouterr().err


def test_workers_starting_at_once_on_one_data_dir_all_pass_the_write_check(tmp_path: Path) -> None:
    """N ingest workers on one host share FIELDPROOF_DATA_DIR and start together (deploy/systemd):
    the write check must not trip over another process's probe (it used one fixed file name)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        results = pool.map(_check_writable, [str(tmp_path / "shared")] * 400)
    assert results == ["ok"] * 400


def _check_writable(data_dir: str) -> str:
    try:
        ServerSettings(data_dir=Path(data_dir)).check_data_dir()
    except SettingsError as exc:
        return str(exc)
    return "ok"
