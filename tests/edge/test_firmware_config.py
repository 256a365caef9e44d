"""firmware-config/: every example config loads, every mistake is named, the policy follows the seed."""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import inspect
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from custody.record import CLOCK_SOURCES, DEVICE_ID_RE
from edge import config as config_module
from edge import config_cli
from edge.config import (
    DEVICE_ID_PATTERN,
    ConfigError,
    RecorderConfig,
    RecordingPolicy,
    SyncConfig,
    default_policy_path,
    load_dock_config,
    load_policy,
    load_recorder_config,
)
from fieldproof import cli

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware-config"
RECORDER = FIRMWARE / "recorder.example.toml"
DOCK = FIRMWARE / "dock.example.toml"
POLICY = FIRMWARE / "recording-policy.toml"
UNITS = FIRMWARE / "systemd"
RULES = FIRMWARE / "udev" / "90-fieldproof-dock.rules"

LOADERS: dict[str, Callable[[Path], BaseModel]] = {
    "recorder": load_recorder_config,
    "dock": load_dock_config,
    "policy": load_policy,
}

# 津人社办发〔2019〕69号 §三(二)2(1), verbatim: the only text a scene's `basis` may quote.
SEED_AUDIO_VIDEO_CLAUSE = (
    "做好音像记录与文字记录的衔接工作，对文字记录能够有效记录执法行为的，可不进行音像记录。"
    "对直接涉及重大财产权益、罚没财物处置的现场执法活动和执法办案场所，要做到全程录音录像记录。"
    "对现场执法、调查取证、举行听证、留置送达和公告送达等容易引发争议的执法过程，"
    "要根据实际情况对相关环节进行音像记录。"
)
SEED_FULL = "对直接涉及重大财产权益、罚没财物处置的现场执法活动和执法办案场所，要做到全程录音录像记录。"
SEED_STAGES = (
    "对现场执法、调查取证、举行听证、留置送达和公告送达等容易引发争议的执法过程，"
    "要根据实际情况对相关环节进行音像记录。"
)


def variant(tmp_path: Path, source: Path, old: str, new: str, *, name: str | None = None) -> Path:
    """A copy of an example file with the first `old` replaced by `new`."""
    text = source.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {source.name}; the test needs updating"
    out = tmp_path / (name or source.name)
    out.write_text(text.replace(old, new, 1), encoding="utf-8")
    return out


def line_of(path: Path, needle: str) -> int:
    """1-based number of the first line of `path` containing `needle`."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def problems(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    return excinfo.value.diagnostics()


# -- the examples ------------------------------------------------------------------------------


def test_the_examples_are_all_found() -> None:
    names = {p.name for p in FIRMWARE.glob("*.toml")}
    assert {"recorder.example.toml", "dock.example.toml", "recording-policy.toml"} <= names


@pytest.mark.parametrize("path", sorted(FIRMWARE.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    kind = config_cli.guess_kind(path)
    assert kind is not None, f"{path.name}: name must say recorder, dock or policy"
    loaded = LOADERS[kind](path)
    assert isinstance(loaded, BaseModel)


def test_recorder_example_values() -> None:
    c = load_recorder_config(RECORDER)
    assert re.fullmatch(DEVICE_ID_PATTERN, c.device_id)
    assert c.segment_seconds == 10
    assert (c.pre_event.seconds, c.pre_event.include_audio) == (30, False)
    assert c.video.keyframe_interval_s == 1
    assert c.location.source.type == "gpsd"
    # Relative to the example's own directory, not to the directory the tests run from.
    assert c.policy == POLICY
    assert load_policy(c.policy_path()).scenes
    # The dock's control link on the USB gadget; acks are checked against the bundle's server certificate.
    assert c.link_port() == Path("/dev/ttyGS0")
    assert c.link is not None
    assert c.link.baud == load_dock_config(DOCK).serial.baud
    assert c.signing.server_cert == FIRMWARE / "server-signing.pem"
    assert c.signing.ca_chain == FIRMWARE / "ca-chain.pem"


def test_dock_example_values() -> None:
    c = load_dock_config(DOCK)
    assert c.mqtt.topic_prefix == "fieldproof/v1"
    assert c.chunk_bytes == 1024 * 1024
    assert c.mqtt.tls is not None
    assert all(port == 8883 for _, port in c.mqtt.broker_addresses())
    # [sync] states the sync client's defaults, and where the server's signing certificate is.
    assert c.sync == SyncConfig(server_cert=Path("/etc/fieldproof/tls/server-signing.pem"))
    assert c.sync.server_cert_given
    assert c.sync.server_cert.parent == c.mqtt.tls.ca.parent


def test_defaults_fill_what_a_minimal_recorder_config_leaves_out(tmp_path: Path) -> None:
    path = tmp_path / "recorder.toml"
    path.write_text(
        'device_id = "REC-0002"\n'
        '[video.source]\ntype = "synthetic"\n'
        '[audio.source]\ntype = "none"\n'
        '[location.source]\ntype = "none"\n'
        '[spool]\ndir = "spool"\n',
        encoding="utf-8",
    )
    c = load_recorder_config(path)
    assert (c.segment_seconds, c.pre_event.seconds, c.pre_event.include_audio) == (10, 30, False)
    assert (c.video.encoder, c.video.keyframe_interval_s) == ("libx264", 1)
    assert c.policy is None
    assert c.policy_path() == default_policy_path() == POLICY
    # No [link]: no control link. The signing files default to the bundle beside the config.
    assert c.link is None
    assert c.link_port() is None
    assert c.signing.key == tmp_path / "signing.key"
    assert c.signing.server_cert == tmp_path / "server-signing.pem"
    path.write_text(path.read_text("utf-8") + "[link]\n", encoding="utf-8")
    assert load_recorder_config(path).link_port() == Path("/dev/ttyGS0")
    path.write_text(path.read_text("utf-8") + "enabled = false\n", encoding="utf-8")
    assert load_recorder_config(path).link_port() is None


def test_defaults_fill_what_a_minimal_dock_config_leaves_out(tmp_path: Path) -> None:
    path = tmp_path / "dock.toml"
    path.write_text(
        'device_id = "DOCK-02"\n[mqtt]\nbrokers = ["127.0.0.1:1883"]\n[outbox]\npath = "outbox.sqlite"\n',
        encoding="utf-8",
    )
    c = load_dock_config(path)
    assert (c.sync.window, c.sync.chunk_window) == (16, 32)
    assert (c.sync.retry_max_s, c.sync.ack_timeout_s, c.sync.poll_s) == (60.0, 10.0, 1.0)
    assert c.sync.session_expiry_s == 3600
    assert (c.sync.broker_stall_s, c.mqtt.keepalive_s) == (15.0, 30)
    # Not written: beside this file (and the dock also looks beside [mqtt.tls] ca).
    assert c.sync.server_cert == tmp_path / "server-signing.pem"
    assert not c.sync.server_cert_given


def test_sync_overrides_from_the_command_line_keep_the_bounds() -> None:
    sync = load_dock_config(DOCK).sync
    assert sync.with_overrides(retry_max_s=None) is sync
    quick = sync.with_overrides(retry_max_s=2.0, ack_timeout_s=1, poll_s=None)
    assert (quick.retry_max_s, quick.ack_timeout_s, quick.poll_s) == (2.0, 1, 1.0)
    assert quick.server_cert_given
    assert quick.server_cert == sync.server_cert
    with pytest.raises(
        ValueError, match=r"ack_timeout_s: Input should be greater than or equal to 0\.5"
    ) as e:
        sync.with_overrides(ack_timeout_s=0.0, poll_s=100.0)
    assert "poll_s: Input should be less than or equal to 60" in str(e.value)
    with pytest.raises(ValueError, match="not settings of \\[sync\\]: windw"):
        sync.with_overrides(windw=3)


def test_too_many_chunk_bytes_in_flight_are_refused(tmp_path: Path) -> None:
    path = variant(tmp_path, DOCK, "chunk_bytes = 1048576", "chunk_bytes = 8388608")
    path = variant(tmp_path, path, "chunk_window = 32", "chunk_window = 4")
    load_dock_config(path)  # 4 × 8 MiB in flight is fine
    path = variant(tmp_path, path, "chunk_window = 4", "chunk_window = 16")
    with pytest.raises(ConfigError) as excinfo:
        load_dock_config(path)
    assert "sync.chunk_window (16) × chunk_bytes (8388608) = 134217728 bytes in flight" in problems(excinfo)


def test_every_model_forbids_unknown_keys_and_is_frozen() -> None:
    models = [
        obj
        for _, obj in inspect.getmembers(config_module, inspect.isclass)
        if issubclass(obj, BaseModel) and obj.__module__.startswith(config_module.__name__)
    ]
    assert len(models) > 20
    for model in models:
        assert model.model_config.get("extra") == "forbid", model.__name__
        assert model.model_config.get("frozen") is True, model.__name__
    c = load_recorder_config(RECORDER)
    with pytest.raises(ValidationError):
        c.segment_seconds = 20  # type: ignore[misc]


def test_device_ids_and_clock_sources_agree_with_the_custody_format() -> None:
    assert DEVICE_ID_RE.pattern == DEVICE_ID_PATTERN
    trusted = RecorderConfig.model_fields["clock"].annotation.model_fields["trusted_sources"]  # type: ignore[union-attr]
    assert set(trusted.annotation.__args__[0].__args__) <= set(CLOCK_SOURCES)


def test_config_module_imports_no_media_or_hardware_library() -> None:
    # The server imports edge.config; it must not drag in camera, codec or serial libraries.
    code = (
        "import sys, edge.config, edge.config_cli\n"
        "heavy = {'cv2', 'av', 'serial', 'gps', 'gpsd', 'picamera2', 'numpy', 'paho', 'pynmea2'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- mistakes are named ------------------------------------------------------------------------

UNKNOWN_KEYS = [
    # (file, the line after which the key goes, the dotted name the message must use)
    (RECORDER, None, "colour"),
    (RECORDER, "[video]", "video.fsp"),
    (RECORDER, "[video.source]", "video.source.devise"),
    (RECORDER, "[pre_event]", "pre_event.secs"),
    (RECORDER, "[location.source]", "location.source.hots"),
    (RECORDER, "[link]", "link.prot"),
    (RECORDER, "[signing]", "signing.server_certificate"),
    (DOCK, None, "mount_dri"),
    (DOCK, "[mqtt.tls]", "mqtt.tls.password"),
    (DOCK, "[sync]", "sync.windw"),
    (POLICY, None, "author"),
    (POLICY, "[[markers]]", "markers[0].lable"),
    (POLICY, "[[scenes]]", "scenes[0].recordng"),
]


@pytest.mark.parametrize(("source", "after", "dotted"), UNKNOWN_KEYS, ids=[u[2] for u in UNKNOWN_KEYS])
def test_an_unknown_key_anywhere_is_rejected_by_name_and_line(
    tmp_path: Path, source: Path, after: str | None, dotted: str
) -> None:
    key = re.split(r"[.\]]", dotted)[-1]
    lines = source.read_text(encoding="utf-8").splitlines()
    # Top-level keys go before the first table header, where TOML puts them.
    at = lines.index(after) + 1 if after else next(i for i, ln in enumerate(lines) if ln.startswith("["))
    lines.insert(at, f"{key} = 1")
    path = tmp_path / source.name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        LOADERS[config_cli.guess_kind(source) or ""](path)
    text = problems(excinfo)
    assert str(path) in text
    assert f"{dotted} (line {at + 1}): unknown key" in text
    assert len(excinfo.value.problems) == 1


WRONG_VALUES = [
    # (file, old text, new text, what the message must contain)
    (RECORDER, "segment_seconds = 10", "segment_seconds = 90", "segment_seconds (line"),
    (RECORDER, "segment_seconds = 10", "segment_seconds = 1", "greater than or equal to 2"),
    (RECORDER, "fps = 25", 'fps = "25"', "video.fps (line"),
    (RECORDER, "width = 1280", "width = 1281", "multiple of 2"),
    (RECORDER, 'type = "v4l2"', 'type = "v4l3"', "video.source.type (line"),
    (RECORDER, "include_audio = false", 'include_audio = "no"', "pre_event.include_audio"),
    (RECORDER, "seconds = 30", "seconds = 300", "pre_event.seconds"),
    (RECORDER, "port = 2947", "port = 70000", "location.source.port"),
    (
        RECORDER,
        'trusted_sources = ["dock", "gps"]',
        'trusted_sources = ["dock", "sundial"]',
        "clock.trusted_sources[1]",
    ),
    (
        RECORDER,
        'trusted_sources = ["dock", "gps"]',
        'trusted_sources = ["gps", "gps"]',
        "listed more than once",
    ),
    (RECORDER, 'device_id = "REC-0001"', 'device_id = "rec 1"', "device_id (line 6)"),
    (RECORDER, 'default_officer_id = ""', "default_officer_id = 12", "default_officer_id"),
    (RECORDER, "reserve_mb = 64", "reserve_mb = 600", "must be less than min_free_mb"),
    (
        RECORDER,
        'port = "/dev/ttyGS0"',
        'port = "ttyGS0"',
        "must be an absolute device path such as /dev/ttyGS0",
    ),
    (RECORDER, 'port = "/dev/ttyGS0"', "port = 0", "link.port (line"),
    (RECORDER, "baud = 115200", "baud = 115201", "link.baud (line"),
    (RECORDER, "enabled = true\nport", 'enabled = "yes"\nport', "link.enabled (line"),
    (DOCK, "chunk_bytes = 1048576", "chunk_bytes = 1024", "chunk_bytes (line"),
    (DOCK, "chunk_bytes = 1048576", "chunk_bytes = 16777216", "less than or equal to 8388608"),
    (DOCK, '"evidence.example.gov.cn:8883", ', '"evidence.example.gov.cn", ', "is not host:port"),
    (DOCK, 'topic_prefix = "fieldproof/v1"', 'topic_prefix = "fieldproof/#"', "mqtt.topic_prefix"),
    (DOCK, 'reference = "ntp"', 'reference = "sundial"', "clock.reference"),
    (DOCK, "brokers = [", "brokers = [] #", "mqtt.brokers"),
    (DOCK, "\nwindow = 16", "\nwindow = 17", "sync.window (line"),
    (DOCK, "\nwindow = 16", "\nwindow = 17", "less than or equal to 16"),
    (DOCK, "chunk_window = 32", "chunk_window = 0", "sync.chunk_window (line"),
    (DOCK, "retry_max_s = 60", 'retry_max_s = "60"', "sync.retry_max_s (line"),
    (DOCK, "retry_max_s = 60", "retry_max_s = 0.5", "greater than or equal to 1"),
    (DOCK, "ack_timeout_s = 10", "ack_timeout_s = 0.1", "sync.ack_timeout_s (line"),
    (DOCK, "session_expiry_s = 3600", "session_expiry_s = 10", "sync.session_expiry_s (line"),
    (DOCK, "broker_stall_s = 15", "broker_stall_s = 1", "sync.broker_stall_s (line"),
    (DOCK, "broker_stall_s = 15", "broker_stall_s = 1", "greater than or equal to 2"),
    (DOCK, "broker_stall_s = 15", "broker_stall_s = 3601", "less than or equal to 3600"),
    (DOCK, "broker_stall_s = 15", 'broker_stall_s = "15"', "sync.broker_stall_s (line"),
    (DOCK, "keepalive_s = 30", "keepalive_s = 4", "mqtt.keepalive_s (line"),
    (DOCK, "poll_s = 1", "poll_s = true", "sync.poll_s (line"),
    (DOCK, "server_cert = ", "server_cert = 1 #", "sync.server_cert (line"),
    (POLICY, 'recording = "full"', 'recording = "always"', "scenes[0].recording"),
    (POLICY, 'code = "show-credentials"', 'code = "Show Credentials"', "markers[0].code"),
    (POLICY, 'label = "出示执法证件"', 'label = "show credentials"', "must be written in Chinese"),
    (POLICY, "version = 1", "version = 2", "version (line"),
]


@pytest.mark.parametrize(
    ("source", "old", "new", "expected"), WRONG_VALUES, ids=[f"{w[0].stem}:{w[2]}" for w in WRONG_VALUES]
)
def test_a_wrong_type_or_out_of_range_value_is_rejected_naming_the_field(
    tmp_path: Path, source: Path, old: str, new: str, expected: str
) -> None:
    path = variant(tmp_path, source, old, new)
    with pytest.raises(ConfigError) as excinfo:
        LOADERS[config_cli.guess_kind(source) or ""](path)
    assert expected in problems(excinfo)


def test_the_line_number_points_at_the_bad_value(tmp_path: Path) -> None:
    path = variant(tmp_path, RECORDER, "bitrate_kbps = 2500", "bitrate_kbps = 5")
    with pytest.raises(ConfigError) as excinfo:
        load_recorder_config(path)
    assert f"video.bitrate_kbps (line {line_of(path, 'bitrate_kbps = 5')})" in problems(excinfo)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = variant(tmp_path, RECORDER, "fps = 25", "fps = 0\nfsp = 25")
    path.write_text(path.read_text(encoding="utf-8").replace("min_free_mb = 512", "min_free_mb = 1"), "utf-8")
    with pytest.raises(ConfigError) as excinfo:
        load_recorder_config(path)
    text = problems(excinfo)
    assert len(excinfo.value.problems) == 3
    assert text.startswith(f"{path}: 3 problems:")
    for dotted in ("video.fps", "video.fsp", "spool.min_free_mb"):
        assert f"  - {dotted} (line" in text


def test_a_missing_required_key_is_named(tmp_path: Path) -> None:
    path = variant(tmp_path, RECORDER, 'dir = "/var/lib/fieldproof/spool"', "")
    with pytest.raises(ConfigError) as excinfo:
        load_recorder_config(path)
    assert f"spool.dir (near line {line_of(path, '[spool]')}): required key is missing" in problems(excinfo)


def test_a_missing_source_type_is_named(tmp_path: Path) -> None:
    path = variant(tmp_path, RECORDER, 'type = "v4l2"', "")
    with pytest.raises(ConfigError) as excinfo:
        load_recorder_config(path)
    assert "video.source.type" in problems(excinfo)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "width = 1280\nheight = 720",
            "width = 3840\nheight = 2160",
            "h264_v4l2m2m handles at most 1920x1088",
        ),
        (
            "keyframe_interval_s = 1",
            "keyframe_interval_s = 3",
            "must be a multiple of video.keyframe_interval_s",
        ),
        ("include_audio = false", "include_audio = true", None),
    ],
)
def test_settings_that_contradict_each_other_are_rejected(
    tmp_path: Path, old: str, new: str, expected: str | None
) -> None:
    path = variant(tmp_path, RECORDER, old, new)
    if expected is None:
        # Pre-event audio is fine with a microphone, and an error without one.
        load_recorder_config(path)
        path = variant(tmp_path, path, 'type = "alsa"', 'type = "none"')
        path.write_text(re.sub(r'(?m)^device = "hw:.*$', "", path.read_text("utf-8")), "utf-8")
        expected = 'pre_event.include_audio is true but audio.source.type is "none"'
    with pytest.raises(ConfigError) as excinfo:
        load_recorder_config(path)
    assert expected in problems(excinfo)


def test_mqtt_without_tls_is_allowed_only_on_loopback(tmp_path: Path) -> None:
    body = 'device_id = "DOCK-02"\n[mqtt]\nbrokers = [{brokers}]\n[outbox]\npath = "outbox.sqlite"\n'
    path = tmp_path / "dock.toml"
    path.write_text(body.format(brokers='"127.0.0.1:1883", "[::1]:1883", "localhost:1884"'), "utf-8")
    assert load_dock_config(path).mqtt.broker_addresses() == [
        ("127.0.0.1", 1883),
        ("::1", 1883),
        ("localhost", 1884),
    ]
    path.write_text(body.format(brokers='"127.0.0.1:1883", "evidence.example.gov.cn:1883"'), "utf-8")
    with pytest.raises(ConfigError) as excinfo:
        load_dock_config(path)
    assert "[mqtt.tls] is required for brokers not on this machine: evidence.example.gov.cn:1883" in problems(
        excinfo
    )


def test_a_toml_syntax_error_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    path = variant(tmp_path, DOCK, "keepalive_s = 30", "keepalive_s = = 30")
    with pytest.raises(ConfigError) as excinfo:
        load_dock_config(path)
    text = problems(excinfo)
    assert text.startswith(f"{path}: not valid TOML")
    assert f"line {line_of(path, 'keepalive_s = = 30')}" in text


def test_a_missing_file_or_non_utf8_text_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_policy(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_policy(tmp_path)
    gbk = tmp_path / "recording-policy.toml"
    gbk.write_bytes('title = "音像记录"\n'.encode("gbk"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_policy(gbk)


# -- relative paths ----------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    (etc / "policies").mkdir(parents=True)
    shutil.copy(POLICY, etc / "policies" / "bureau.toml")
    text = RECORDER.read_text("utf-8")
    text = text.replace('policy = "recording-policy.toml"', 'policy = "policies/bureau.toml"')
    text = text.replace('dir = "/var/lib/fieldproof/spool"', 'dir = "spool"')
    (etc / "recorder.toml").write_text(text, "utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = load_recorder_config(Path("../etc/recorder.toml"))
    assert c.policy == (etc / "policies" / "bureau.toml").resolve()
    assert c.spool.dir == etc.resolve() / "spool"
    assert c.control.socket == Path("/run/fieldproof/recorder.sock")  # absolute paths stay as written
    assert load_policy(c.policy_path()) == load_policy(POLICY)


def test_the_shipped_policy_is_found_in_the_source_tree() -> None:
    assert default_policy_path() == POLICY


# -- the recording policy ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy() -> RecordingPolicy:
    return load_policy(POLICY)


def test_policy_cross_references_hold(policy: RecordingPolicy) -> None:
    marker_codes = [m.code for m in policy.markers]
    scene_codes = [s.code for s in policy.scenes]
    assert len(set(marker_codes)) == len(marker_codes)
    assert len(set(scene_codes)) == len(scene_codes)
    used = set()
    for scene in policy.scenes:
        assert set(scene.markers) <= set(marker_codes), scene.code
        assert set(scene.required_markers) <= set(scene.markers), scene.code
        assert scene.required_markers, f"{scene.code}: a scene with no required marker cannot be checked"
        used |= set(scene.markers)
        assert policy.scene(scene.code) is scene
    assert used == set(marker_codes), f"markers no scene prompts for: {set(marker_codes) - used}"
    with pytest.raises(KeyError):
        policy.scene("no-such-scene")


def test_policy_texts_fit_the_capture_record(policy: RecordingPolicy) -> None:
    # custody.record: scene and marker label fields hold at most 64 characters.
    for item in (*policy.scenes, *policy.markers):
        assert len(item.code) <= 64
    assert all(len(m.label) <= 64 and m.prompt for m in policy.markers)


def test_the_seeds_full_recording_scenes_are_full(policy: RecordingPolicy) -> None:
    full = {s.code: s for s in policy.scenes if s.recording == "full"}
    # 直接涉及重大财产权益 / 罚没财物处置的现场执法活动, 执法办案场所: 全程录音录像.
    assert set(full) == {"major-property", "confiscated-disposal", "case-premises"}
    assert {s.name for s in full.values()} == {
        "直接涉及重大财产权益的现场执法",
        "罚没财物处置",
        "执法办案场所",
    }
    assert all(s.basis == SEED_FULL for s in full.values())


def test_the_seeds_disputable_processes_are_recorded_at_least_in_stages(policy: RecordingPolicy) -> None:
    # 现场执法、调查取证、举行听证、留置送达和公告送达: 根据实际情况对相关环节进行音像记录.
    for process, codes in {
        "现场执法": ["onsite-inspection", "summary-penalty", "re-inspection"],
        "调查取证": ["inquiry", "evidence-preservation"],
        "举行听证": ["hearing"],
        "留置送达": ["service-left"],
        "公告送达": ["service-public"],
    }.items():
        assert process in SEED_STAGES
        for code in codes:
            scene = policy.scene(code)
            assert scene.recording == "stages", code
            assert scene.basis == SEED_STAGES, code


def test_every_scene_quotes_the_seed_and_optional_ones_say_why(policy: RecordingPolicy) -> None:
    for scene in policy.scenes:
        assert scene.basis in SEED_AUDIO_VIDEO_CLAUSE, scene.code
        if scene.recording == "optional":
            assert "对文字记录能够有效记录执法行为的，可不进行音像记录" in scene.basis


def test_the_policy_has_the_scenes_inspectors_meet(policy: RecordingPolicy) -> None:
    names = " ".join(s.name for s in policy.scenes)
    for wanted in (
        "现场检查",
        "入户检查",
        "调查询问",
        "证据保全",
        "查封扣押",
        "听证",
        "陈述申辩",
        "留置送达",
        "公告送达",
        "直接送达",
        "简易程序当场处罚",
        "复查",
        "执法办案场所",
        "重大财产权益",
        "罚没财物处置",
    ):
        assert wanted in names, wanted
    labels = {m.label for m in policy.markers}
    for wanted in (
        "出示执法证件",
        "告知权利义务",
        "告知陈述申辩权",
        "送达文书",
        "当事人拒签",
        "证据封存",
        "开始询问",
        "结束询问",
        "现场情况",
    ):
        assert wanted in labels, wanted


POLICY_MISTAKES = [
    (
        'markers = ["notice-posted", "site-overview", "end-record"]',
        'markers = ["notice-posted", "site-overveiw", "end-record"]',
        "scene 'service-public' lists marker 'site-overveiw', which is not in the [[markers]] list",
    ),
    (
        'code = "inquiry-end"',
        'code = "inquiry-start"',
        "marker code 'inquiry-start' is defined more than once",
    ),
    ('code = "re-inspection"', 'code = "hearing"', "scene code 'hearing' is defined more than once"),
    (
        'required_markers = ["notice-posted"]',
        'required_markers = ["notice-posted", "end-recording"]',
        "required_markers 'end-recording' not in this scene's markers",
    ),
    (
        'required_markers = ["notice-posted"]',
        'required_markers = ["notice-posted", "notice-posted"]',
        "required_markers lists 'notice-posted' more than once",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    POLICY_MISTAKES,
    ids=["unknown-marker", "dup-marker", "dup-scene", "required-unlisted", "required-twice"],
)
def test_policy_cross_reference_mistakes_are_named(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = variant(tmp_path, POLICY, old, new)
    with pytest.raises(ConfigError) as excinfo:
        load_policy(path)
    assert expected in problems(excinfo)


# -- `fieldproof config check` ------------------------------------------------------------------


def component_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fieldproof")
    sub = parser.add_subparsers(dest="command")
    config_cli.add_parser(sub)
    return parser


def run_component(argv: list[str]) -> int:
    args = component_parser().parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.mark.parametrize(
    ("path", "summary"),
    [
        (RECORDER, "OK: recorder REC-0001: video v4l2 1280x720@25 h264_v4l2m2m, audio alsa, 10 s segments"),
        (DOCK, "OK: dock DOCK-01: 2 broker(s) (mutual TLS), topics fieldproof/v1/…"),
        (POLICY, "OK: recording policy: 13 scenes (3 full, 8 stages, 2 optional), 28 markers"),
    ],
    ids=["recorder", "dock", "policy"],
)
def test_config_check_accepts_the_examples(
    path: Path, summary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_component(["config", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(summary)
    assert out.count("\n") == 1
    assert err == ""


def test_config_check_of_a_recorder_checks_its_policy_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_component(["config", "check", str(RECORDER)]) == 0
    assert f"13 scenes (3 full, 8 stages, 2 optional), 28 markers ({POLICY})" in capsys.readouterr().out
    path = variant(tmp_path, RECORDER, 'policy = "recording-policy.toml"', 'policy = "missing-policy.toml"')
    assert run_component(["config", "check", str(path)]) == 2
    assert f"{tmp_path / 'missing-policy.toml'}: no such file" in capsys.readouterr().err


def test_config_check_rejects_a_bad_file_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = variant(tmp_path, DOCK, "[mqtt]", "[mqtt]\nkeepalive = 60")
    assert run_component(["config", "check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"fieldproof config check: {path}: mqtt.keepalive (line ")
    assert "unknown key" in err


def test_config_check_guesses_the_kind_or_asks_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "site-a.toml"
    shutil.copy(DOCK, odd)
    assert run_component(["config", "check", str(odd)]) == 2
    assert "pass --kind recorder|dock|policy" in capsys.readouterr().err
    assert run_component(["config", "check", str(odd), "--kind", "dock"]) == 0
    assert capsys.readouterr().out.startswith("OK: dock DOCK-01")
    # The dock file checked as a policy: every policy key is missing, every dock key unknown.
    assert run_component(["config", "check", str(odd), "--kind", "policy"]) == 2
    err = capsys.readouterr().err
    assert "device_id (line 6): unknown key" in err
    assert "scenes: required key is missing" in err
    assert [config_cli.guess_kind(Path(n)) for n in ("recorder.toml", "dock-7.toml", "x-policy.toml")] == [
        "recorder",
        "dock",
        "policy",
    ]
    assert config_cli.guess_kind(Path("recorder-dock.toml")) is None


def test_config_check_needs_a_file_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        component_parser().parse_args(["config", "check"])
    assert excinfo.value.code == 2
    assert "FILE" in capsys.readouterr().err


def test_config_check_through_fieldproof_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only this component: its parser must stand on its own.
    monkeypatch.setattr(cli, "COMPONENTS", ("edge.config_cli",))
    assert cli.main(["config", "check", str(POLICY)]) == 0
    assert capsys.readouterr().out.startswith("OK: recording policy: 13 scenes")
    bad = variant(tmp_path, POLICY, "version = 1", "version = 1\nversoin = 1")
    assert cli.main(["config", "check", str(bad)]) == 2
    assert "versoin (line" in capsys.readouterr().err


def test_config_check_through_the_full_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "check", str(DOCK)]) == 0
    assert capsys.readouterr().out.startswith("OK: dock DOCK-01")


# -- udev --------------------------------------------------------------------------------------

# udev(7): keys that only match, keys that only assign, keys that do both; which take {attribute}.
_MATCH_KEYS = {
    "ACTION",
    "DEVPATH",
    "KERNEL",
    "KERNELS",
    "SUBSYSTEM",
    "SUBSYSTEMS",
    "DRIVER",
    "DRIVERS",
    "ATTRS",
    "TAGS",
    "TEST",
    "PROGRAM",
    "RESULT",
    "CONST",
}
_ASSIGN_KEYS = {"OWNER", "GROUP", "MODE", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS", "SECLABEL", "WAIT_FOR"}
_BOTH_KEYS = {"NAME", "SYMLINK", "ATTR", "SYSCTL", "ENV", "TAG"}
_ATTR_REQUIRED = {"ATTR", "ATTRS", "SYSCTL", "ENV", "IMPORT", "CONST", "SECLABEL"}
_ATTR_ALLOWED = _ATTR_REQUIRED | {"TEST", "RUN"}
_TOKEN = re.compile(
    r'\s*(?P<key>[A-Z_]+)(?:\{(?P<attr>[^}]*)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*"(?P<value>[^"]*)"\s*'
)
_SUBST = re.compile(r"%(.)|\$(\w+)(\{[^}]*\})?")
_SUBST_CHARS = set("knpbMmcPNDrS%")
_SUBST_NAMES = {
    "kernel",
    "number",
    "devpath",
    "id",
    "driver",
    "attr",
    "env",
    "major",
    "minor",
    "result",
    "parent",
    "name",
    "links",
    "root",
    "sys",
    "devnode",
    "tempnode",
}

Triplet = tuple[str, str | None, str, str]


def parse_udev_rules(text: str) -> list[list[Triplet]]:
    """Each rule as (key, attribute, operator, value) tuples; AssertionError saying what is wrong."""
    rules: list[list[Triplet]] = []
    joined = re.sub(r"\\\n", " ", text)
    for number, line in enumerate(joined.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pos, rule = 0, []
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            assert m, f"rule {number}: cannot parse from {line[pos : pos + 40]!r}"
            key, attr, op, value = m["key"], m["attr"], m["op"], m["value"]
            assert key in _MATCH_KEYS | _ASSIGN_KEYS | _BOTH_KEYS, f"rule {number}: unknown key {key}"
            assert attr is None or key in _ATTR_ALLOWED, f"rule {number}: {key} takes no {{attribute}}"
            assert attr is not None or key not in _ATTR_REQUIRED, (
                f"rule {number}: {key} needs an {{attribute}}"
            )
            if op in ("==", "!="):
                assert key not in _ASSIGN_KEYS, f"rule {number}: {key} cannot be matched"
            else:
                assert key not in _MATCH_KEYS, f"rule {number}: {key} cannot be assigned"
            for sm in _SUBST.finditer(value):
                ok = sm[1] in _SUBST_CHARS if sm[1] else sm[2] in _SUBST_NAMES
                assert ok, f"rule {number}: unknown substitution {sm[0]!r}"
            rule.append((key, attr, op, value))
            pos = m.end()
            if pos < len(line):
                assert line[pos] == ",", f"rule {number}: expected ',' at {line[pos : pos + 20]!r}"
                pos += 1
        assert any(op in ("==", "!=") for _, _, op, _ in rule), f"rule {number}: matches nothing"
        assert any(op not in ("==", "!=") for _, _, op, _ in rule), f"rule {number}: does nothing"
        rules.append(rule)
    return rules


@pytest.mark.parametrize(
    "bad",
    [
        'SUBSYSTEM=="tty", SYMLINK+="x',
        'SUBSYSTEM=="tty" SYMLINK+="x"',
        'SUBSYSTEM=="tty", FOO="x"',
        'KERNEL="ttyACM0", SYMLINK+="x"',
        'SUBSYSTEM=="tty", GROUP=="dialout"',
        'SUBSYSTEM=="tty", ENV="1"',
        'SUBSYSTEM=="tty", SYMLINK+="x-%q"',
        'SUBSYSTEM=="tty"',
        'SUBSYSTEM=~"tty", MODE="0660"',
    ],
)
def test_the_udev_checker_catches_broken_rules(bad: str) -> None:
    with pytest.raises(AssertionError):
        parse_udev_rules(bad)


def _rule_with(rules: list[list[Triplet]], key: str, value: str) -> list[Triplet]:
    found = [r for r in rules if any(k == key and v == value for k, _, _, v in r)]
    assert len(found) == 1, f"one rule with {key}={value!r} expected, found {len(found)}"
    return found[0]


def test_the_udev_rules_parse_and_name_the_docked_recorder() -> None:
    rules = parse_udev_rules(RULES.read_text("utf-8"))
    assert len(rules) == 2
    spool = _rule_with(rules, "SUBSYSTEM", "block")
    assert ("ENV", "ID_FS_LABEL", "==", "FPSPOOL") in spool
    assert ("ATTRS", "idVendor", "==", "1d6b") in spool
    assert ("ATTRS", "idProduct", "==", "0104") in spool
    assert ("SYMLINK", None, "+=", "fieldproof-recorder-%k") in spool
    assert ("TAG", None, "+=", "systemd") in spool
    wants = [v for k, a, _, v in spool if (k, a) == ("ENV", "SYSTEMD_WANTS")]
    assert wants == ["fieldproof-dock-attach@%k.service"]
    assert (UNITS / "fieldproof-dock-attach@.service").is_file()
    ctl = _rule_with(rules, "SUBSYSTEM", "tty")
    assert ("SYMLINK", None, "+=", "fieldproof-ctl-%n") in ctl
    assert ("ENV", "ID_MM_DEVICE_IGNORE", "=", "1") in ctl
    # The dock looks for its control links where the rule puts them.
    assert fnmatch.fnmatch("/dev/fieldproof-ctl-0", load_dock_config(DOCK).serial.ports)


# -- systemd -----------------------------------------------------------------------------------


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read(path, encoding="utf-8")
    return unit


SERVICES = {
    "fieldproof-recorder.service": ("recorder", "/etc/fieldproof/recorder.toml"),
    "fieldproof-dock.service": ("dock", "/etc/fieldproof/dock.toml"),
}


def test_the_unit_files_are_the_expected_ones() -> None:
    assert {p.name for p in UNITS.iterdir()} == {*SERVICES, "fieldproof-dock-attach@.service"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_the_services_are_hardened_and_run_the_right_command(name: str) -> None:
    component, config_path = SERVICES[name]
    unit = read_unit(UNITS / name)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    assert unit["Unit"]["Description"]
    service = unit["Service"]
    exec_start = shlex.split(service["ExecStart"])
    assert Path(exec_start[0]).is_absolute()
    assert Path(exec_start[0]).name == "fieldproof"
    assert exec_start[1:] == [component, "run", "--config", config_path]
    assert shlex.split(service["ExecStartPre"])[1:] == ["config", "check", config_path, "--kind", component]
    assert service["User"] not in ("", "root")
    for key, value in {
        "Restart": "on-failure",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == value, key
    assert service["ReadWritePaths"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_recorder_unit_may_open_the_control_link_but_not_set_the_clock() -> None:
    rec = read_unit(UNITS / "fieldproof-recorder.service")["Service"]
    # /dev/ttyGS0 is group dialout (udev's default rules); no device policy keeps the service from it.
    assert str(load_recorder_config(RECORDER).link_port()).startswith("/dev/tty")
    assert "dialout" in rec["SupplementaryGroups"].split()
    assert "DevicePolicy" not in rec
    assert "PrivateDevices" not in rec
    # The agent never steps the clock (set_time is None); the unit makes sure nothing in it can.
    assert rec["ProtectClock"] == "yes"
    assert rec["AmbientCapabilities"] == ""


def test_the_units_give_write_access_exactly_where_the_configs_write() -> None:
    recorder, dock = load_recorder_config(RECORDER), load_dock_config(DOCK)
    rec = read_unit(UNITS / "fieldproof-recorder.service")["Service"]
    assert str(recorder.spool.dir) in rec["ReadWritePaths"].split()
    assert recorder.control.socket.parent == Path("/run") / rec["RuntimeDirectory"]
    dck = read_unit(UNITS / "fieldproof-dock.service")["Service"]
    assert dock.outbox.path.parent == Path("/var/lib") / dck["StateDirectory"]
    assert str(dock.outbox.path.parent) in dck["ReadWritePaths"].split()
    assert f"-{dock.mount_dir}" in dck["ReadOnlyPaths"].split()


def test_the_attach_unit_mounts_read_only_under_the_docks_mount_dir() -> None:
    unit = read_unit(UNITS / "fieldproof-dock-attach@.service")
    assert {"Unit", "Service"} <= set(unit.sections())
    # Started by udev for each docked recorder, never enabled: a template with no [Install].
    assert "Install" not in unit.sections()
    assert unit["Unit"]["BindsTo"] == "dev-%i.device"
    argv = shlex.split(unit["Service"]["ExecStart"].replace("\\\n", " "))
    assert argv[0] == "/usr/bin/systemd-mount"
    options = next(a for a in argv if a.startswith("--options=")).removeprefix("--options=").split(",")
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(options)
    assert "--fsck=no" in argv
    assert argv[-2:] == ["/dev/%I", f"{load_dock_config(DOCK).mount_dir}/%I"]


def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: scripts/setup.sh installs the systemd package"
    # verify insists that ExecStart binaries exist: point them at this checkout's command.
    here = Path(sys.executable).with_name("fieldproof")
    names = []
    for unit in UNITS.iterdir():
        name = unit.name.replace("@.", "@sdb1.")
        text = unit.read_text("utf-8").replace("/opt/fieldproof/venv/bin/fieldproof", str(here))
        (tmp_path / name).write_text(text, "utf-8")
        names.append(str(tmp_path / name))
    out = subprocess.run([analyze, "verify", "--man=no", *names], capture_output=True, text=True, check=False)
    # verify exits 0 even for unknown keys; any message at all is a finding.
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


# -- gpsd --------------------------------------------------------------------------------------


def read_shell_assignments(path: Path) -> dict[str, str]:
    values: dict[str, Any] = {}
    for line in path.read_text("utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not an assignment: {line!r}"
            assert re.fullmatch(r"[A-Z_]+", key), f"not a variable name: {key!r}"
            (values[key],) = shlex.split(value)
    return values


def test_gpsd_defaults_poll_the_uart_receiver_from_boot() -> None:
    values = read_shell_assignments(FIRMWARE / "gpsd" / "gpsd.default")
    assert set(values) == {"DEVICES", "GPSD_OPTIONS", "USBAUTO"}
    assert values["DEVICES"].split() == ["/dev/serial0"]
    assert "-n" in values["GPSD_OPTIONS"].split()
    assert values["USBAUTO"] in ("true", "false")
    source = load_recorder_config(RECORDER).location.source
    assert (source.type, getattr(source, "port", None)) == ("gpsd", 2947)
