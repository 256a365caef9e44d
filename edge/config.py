"""Device configuration: the recorder's and dock's settings and the recording policy, read from TOML.

Every model forbids unknown keys, so a misspelt setting is an error that names the key and its line,
never a silent default. Only pydantic and the standard library are imported here: the server and
the provisioning tools read these files too, and must not pull in camera or codec libraries.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fieldproof.errors import FieldproofError

#: Device ids as the custody format spells them (mirrors ``custody.record.DEVICE_ID_RE``; a test keeps
#: the two equal): upper-case letters, digits and hyphens, 3–32 characters (REC-0001, DOCK-01).
DEVICE_ID_PATTERN: Final = r"^[A-Z0-9][A-Z0-9-]{2,31}$"
#: 执法证号: digits, letters and hyphens; empty means "no default officer".
OFFICER_ID_PATTERN: Final = r"^[0-9A-Za-z-]{0,64}$"
#: Scene and marker codes: ASCII slugs, since they travel in records and topic-safe identifiers.
CODE_PATTERN: Final = r"^[a-z][a-z0-9-]{1,39}$"
_CJK: Final = re.compile(r"[\u3400-\u9fff]")
# A unix socket address holds at most 108 bytes including the terminating NUL (sun_path).
_SUN_PATH_MAX: Final = 107


class ConfigError(FieldproofError):
    """A configuration or policy file that cannot be used, with every problem and where it is."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = f"{path}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            text = f"{path}: {len(self.problems)} problems:\n{lines}"
        super().__init__(text)


# -- building blocks ---------------------------------------------------------------------------


class _Config(BaseModel):
    """Base of every config model: unknown keys are errors, loaded values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_against_file(value: Path, info: ValidationInfo) -> Path:
    # Relative paths mean "next to this config file", wherever the process happens to run from.
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


#: A path in a config file; relative paths are resolved against the file's directory by the loaders.
ConfigPath = Annotated[Path, AfterValidator(_resolve_against_file)]
DeviceId = Annotated[StrictStr, Field(pattern=DEVICE_ID_PATTERN)]
Code = Annotated[StrictStr, Field(pattern=CODE_PATTERN)]
_T = TypeVar("_T")


def _duplicates(items: Iterable[_T]) -> list[_T]:
    seen: set[_T] = set()
    dups: list[_T] = []
    for item in items:
        if item in seen and item not in dups:
            dups.append(item)
        seen.add(item)
    return dups


def _chinese(value: str) -> str:
    if not _CJK.search(value):
        raise ValueError("must be written in Chinese (it is shown to inspectors)")
    return value


ChineseText = Annotated[StrictStr, Field(min_length=1, max_length=64), AfterValidator(_chinese)]


# -- recorder ----------------------------------------------------------------------------------


class V4l2Source(_Config):
    """A V4L2 camera (USB or CSI through the kernel driver)."""

    type: Literal["v4l2"]
    device: ConfigPath = Path("/dev/video0")
    pixel_format: Literal["yuyv422", "mjpeg", "nv12"] | None = None


class Picamera2Source(_Config):
    """A Raspberry Pi camera through libcamera/picamera2."""

    type: Literal["picamera2"]
    camera_num: StrictInt = Field(default=0, ge=0, le=7)


class FileSource(_Config):
    """A video file replayed as if live (demos, field-trial reconstructions)."""

    type: Literal["file"]
    path: ConfigPath
    loop: StrictBool = True


class SyntheticVideoSource(_Config):
    """A generated test pattern (an FFmpeg lavfi source), for tests and CI, which have no camera."""

    type: Literal["synthetic"]
    pattern: Literal[
        "testsrc",
        "testsrc2",
        "smptebars",
        "smptehdbars",
        "rgbtestsrc",
        "yuvtestsrc",
        "mandelbrot",
        "pal75bars",
    ] = "testsrc2"


VideoSource = Annotated[
    V4l2Source | Picamera2Source | FileSource | SyntheticVideoSource, Field(discriminator="type")
]


class VideoConfig(_Config):
    """What the camera captures and how it is encoded."""

    source: VideoSource
    # Even sizes only: H.264 encodes 4:2:0 chroma, which halves both dimensions.
    width: StrictInt = Field(default=1280, ge=160, le=3840, multiple_of=2)
    height: StrictInt = Field(default=720, ge=120, le=2160, multiple_of=2)
    fps: StrictInt = Field(default=25, ge=1, le=60)
    bitrate_kbps: StrictInt = Field(default=2500, ge=100, le=20_000)
    encoder: Literal["libx264", "h264_v4l2m2m"] = "libx264"
    keyframe_interval_s: StrictInt = Field(default=1, ge=1, le=10)

    @model_validator(mode="after")
    def _hardware_encoder_limits(self) -> VideoConfig:
        # The Pi's V4L2 M2M H.264 encoder stops at level 4.2, i.e. 1920x1088.
        if self.encoder == "h264_v4l2m2m" and (self.width > 1920 or self.height > 1088):
            raise ValueError(
                f"encoder h264_v4l2m2m handles at most 1920x1088, not {self.width}x{self.height}; "
                "lower width/height or use libx264"
            )
        return self


class AlsaSource(_Config):
    """An ALSA capture device (the body-worn microphone)."""

    type: Literal["alsa"]
    device: StrictStr = Field(default="default", min_length=1, max_length=64)


class SyntheticAudioSource(_Config):
    """A generated sine tone, for tests and CI."""

    type: Literal["synthetic"]
    frequency_hz: StrictInt = Field(default=1000, ge=20, le=20_000)


class NoAudioSource(_Config):
    """No microphone: video only."""

    type: Literal["none"]


AudioSource = Annotated[AlsaSource | SyntheticAudioSource | NoAudioSource, Field(discriminator="type")]


class AudioConfig(_Config):
    """What the microphone captures (encoded as AAC)."""

    source: AudioSource
    rate: Literal[8000, 16000, 22050, 32000, 44100, 48000] = 48000
    channels: StrictInt = Field(default=1, ge=1, le=2)


class PreEventConfig(_Config):
    """The ring of footage kept before the inspector presses record."""

    seconds: StrictInt = Field(default=30, ge=0, le=120)
    # Video only by default, as peer products do: silent pre-event video is the common expectation
    # of the people filmed, and audio before the press is the more intrusive half.
    include_audio: StrictBool = False


class OverlayConfig(_Config):
    """The text burned into every frame: UTC time, device, officer, position."""

    enabled: StrictBool = True
    font_scale: float = Field(default=0.6, ge=0.2, le=4.0, strict=True)
    thickness: StrictInt = Field(default=1, ge=1, le=8)
    position: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = "bottom-left"
    show_officer: StrictBool = True
    show_location: StrictBool = True


class GpsdSource(_Config):
    """Fixes from a gpsd daemon."""

    type: Literal["gpsd"]
    host: StrictStr = Field(default="127.0.0.1", min_length=1)
    port: StrictInt = Field(default=2947, ge=1, le=65535)


class NmeaSerialSource(_Config):
    """Fixes parsed directly from a receiver's NMEA 0183 serial output."""

    type: Literal["nmea-serial"]
    port: ConfigPath
    baud: Literal[4800, 9600, 19200, 38400, 57600, 115200] = 9600


class NoLocationSource(_Config):
    """No receiver: every record says "no fix" explicitly."""

    type: Literal["none"]


LocationSource = Annotated[GpsdSource | NmeaSerialSource | NoLocationSource, Field(discriminator="type")]


class LocationConfig(_Config):
    """Where 采集地点 comes from."""

    source: LocationSource
    # An older fix is still recorded, but marked stale rather than passed off as the current place.
    max_fix_age_s: StrictInt = Field(default=10, ge=1, le=600)


class RecorderClockConfig(_Config):
    """Which time sources the recorder trusts, and when it warns about its own clock."""

    trusted_sources: tuple[Literal["dock", "gps", "ntp", "rtc"], ...] = Field(
        default=("dock", "gps"), min_length=1
    )
    max_offset_ms: StrictInt = Field(default=1000, ge=1, le=600_000)

    @field_validator("trusted_sources")
    @classmethod
    def _unique_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if dups := _duplicates(value):
            raise ValueError(f"listed more than once: {', '.join(dups)}")
        return value


class SpoolConfig(_Config):
    """The recorder's durable store of finished segments and its chain."""

    dir: ConfigPath
    # Below min_free_mb no new recording starts; reserve_mb is never filled by footage, so the
    # records that close a recording (and note any gap) can always be written.
    min_free_mb: StrictInt = Field(default=512, ge=16, le=10_000_000)
    reserve_mb: StrictInt = Field(default=64, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _reserve_below_minimum(self) -> SpoolConfig:
        if self.reserve_mb >= self.min_free_mb:
            raise ValueError(
                f"reserve_mb ({self.reserve_mb}) must be less than min_free_mb ({self.min_free_mb})"
            )
        return self


class ControlConfig(_Config):
    """The local control socket (buttons, status, the dock's link daemon)."""

    socket: ConfigPath = Path("/run/fieldproof/recorder.sock")

    @field_validator("socket")
    @classmethod
    def _fits_sun_path(cls, value: Path) -> Path:
        if len(str(value).encode()) > _SUN_PATH_MAX:
            raise ValueError(f"a unix socket path is at most {_SUN_PATH_MAX} bytes; {value} is longer")
        return value


class RecorderConfig(_Config):
    """Everything a body-worn recorder needs to know (firmware-config/recorder.example.toml)."""

    device_id: DeviceId
    # 执法证号 stamped on footage when no inspector has checked the recorder out.
    default_officer_id: Annotated[StrictStr, Field(pattern=OFFICER_ID_PATTERN)] = ""
    segment_seconds: StrictInt = Field(default=10, ge=2, le=60)
    # None: the recording policy shipped with the software (see default_policy_path).
    policy: ConfigPath | None = None
    video: VideoConfig
    audio: AudioConfig
    pre_event: PreEventConfig = PreEventConfig()
    overlay: OverlayConfig = OverlayConfig()
    location: LocationConfig
    clock: RecorderClockConfig = RecorderClockConfig()
    spool: SpoolConfig
    control: ControlConfig = ControlConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RecorderConfig:
        # Segments are cut at keyframes only, so a segment must hold whole GOPs.
        if self.segment_seconds % self.video.keyframe_interval_s:
            raise ValueError(
                f"segment_seconds ({self.segment_seconds}) must be a multiple of "
                f"video.keyframe_interval_s ({self.video.keyframe_interval_s})"
            )
        if self.pre_event.include_audio and self.audio.source.type == "none":
            raise ValueError('pre_event.include_audio is true but audio.source.type is "none"')
        return self

    def policy_path(self) -> Path:
        """The recording policy file this recorder follows."""
        return self.policy if self.policy is not None else default_policy_path()


# -- dock --------------------------------------------------------------------------------------


class SerialConfig(_Config):
    """The serial control links to docked recorders (USB CDC-ACM, named by the udev rule)."""

    ports: StrictStr = Field(default="/dev/fieldproof-ctl-*", pattern=r"^/dev/")
    baud: Literal[9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600] = 115200


class MqttTlsConfig(_Config):
    """Mutual TLS: the fleet CA and this dock's client certificate."""

    ca: ConfigPath
    cert: ConfigPath
    key: ConfigPath


_LABEL: Final = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME: Final = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def parse_broker(address: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6addr]:port`` into host and port; ValueError if malformed."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError when it is not one
    elif not _HOSTNAME.match(host):
        raise ValueError(f"{address!r}: {host!r} is not a host name or IPv4 address")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{address!r}: port {port} is outside 1..65535")
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MqttConfig(_Config):
    """The brokers the dock sends to, and how."""

    brokers: tuple[StrictStr, ...] = Field(min_length=1)
    topic_prefix: StrictStr = Field(default="fieldproof/v1", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    keepalive_s: StrictInt = Field(default=60, ge=5, le=3600)
    tls: MqttTlsConfig | None = None

    @field_validator("brokers")
    @classmethod
    def _valid_brokers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            parse_broker(address)
        if dups := _duplicates(value):
            raise ValueError(f"listed more than once: {', '.join(dups)}")
        return value

    @model_validator(mode="after")
    def _tls_off_only_on_loopback(self) -> MqttConfig:
        # Evidence and device credentials never cross a network in clear text; a broker on the same
        # machine (tests, the one-box demo) is the only place TLS may be left out.
        remote = [b for b in self.brokers if not _is_loopback(parse_broker(b)[0])]
        if self.tls is None and remote:
            raise ValueError(f"[mqtt.tls] is required for brokers not on this machine: {', '.join(remote)}")
        return self

    def broker_addresses(self) -> list[tuple[str, int]]:
        """The brokers as (host, port) pairs, in the order to try them."""
        return [parse_broker(b) for b in self.brokers]


class OutboxConfig(_Config):
    """The dock's durable queue of what is not yet acknowledged by the server."""

    path: ConfigPath


class DockClockConfig(_Config):
    """The dock's time reference for setting docked recorders' clocks."""

    reference: Literal["ntp", "gps", "rtc"] = "ntp"
    # A larger offset is still corrected, but recorded as a clock anomaly for the custodian to see.
    max_set_offset_ms: StrictInt = Field(default=2000, ge=1, le=86_400_000)


class DockConfig(_Config):
    """Everything a docking station needs to know (firmware-config/dock.example.toml)."""

    device_id: DeviceId
    # Where docked recorders' spools are mounted (read-only) by fieldproof-dock-attach@.service.
    mount_dir: ConfigPath = Path("/media/fieldproof")
    chunk_bytes: StrictInt = Field(default=1024 * 1024, ge=16 * 1024, le=8 * 1024 * 1024)
    serial: SerialConfig = SerialConfig()
    mqtt: MqttConfig
    outbox: OutboxConfig
    clock: DockClockConfig = DockClockConfig()


# -- recording policy --------------------------------------------------------------------------


class Marker(_Config):
    """A moment an inspector marks on the recording (出示执法证件, 告知权利义务…)."""

    code: Code
    label: ChineseText
    # 执法行为用语指引: what the recorder shows the inspector when prompting for this marker.
    prompt: StrictStr = Field(min_length=1, max_length=500)


class Scene(_Config):
    """A kind of enforcement activity and how it must be recorded."""

    code: Code
    name: ChineseText
    # full: 全程音像记录 required; stages: 根据实际情况对相关环节进行音像记录;
    # optional: a written record suffices (可不进行音像记录).
    recording: Literal["full", "stages", "optional"]
    basis: StrictStr = Field(min_length=1, max_length=500)
    # Suggested 证明对象 text, pre-filled for the inspector to complete.
    proof_hint: StrictStr = Field(default="", max_length=200)
    markers: tuple[Code, ...] = ()
    required_markers: tuple[Code, ...] = ()

    @model_validator(mode="after")
    def _required_are_prompted(self) -> Scene:
        problems = [f"markers lists {c!r} more than once" for c in _duplicates(self.markers)]
        problems += [
            f"required_markers lists {c!r} more than once" for c in _duplicates(self.required_markers)
        ]
        missing = [c for c in self.required_markers if c not in self.markers]
        if missing:
            problems.append(f"required_markers {', '.join(map(repr, missing))} not in this scene's markers")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RecordingPolicy(_Config):
    """The 音像记录事项清单: which scenes need full recording and which markers are prompted."""

    version: Literal[1]
    title: StrictStr = Field(min_length=1, max_length=200)
    source: StrictStr = Field(min_length=1, max_length=500)
    markers: tuple[Marker, ...] = Field(min_length=1)
    scenes: tuple[Scene, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross_references(self) -> RecordingPolicy:
        marker_codes = [m.code for m in self.markers]
        problems = [f"marker code {c!r} is defined more than once" for c in _duplicates(marker_codes)]
        problems += [
            f"scene code {c!r} is defined more than once" for c in _duplicates(s.code for s in self.scenes)
        ]
        problems += [
            f"scene {scene.code!r} lists marker {code!r}, which is not in the [[markers]] list"
            for scene in self.scenes
            for code in scene.markers
            if code not in marker_codes
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def scene(self, code: str) -> Scene:
        """The scene with this code; KeyError if the policy has none."""
        for scene in self.scenes:
            if scene.code == code:
                return scene
        raise KeyError(code)

    def marker(self, code: str) -> Marker:
        """The marker with this code; KeyError if the catalogue has none."""
        for marker in self.markers:
            if marker.code == code:
                return marker
        raise KeyError(code)


# -- loading -----------------------------------------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


def _read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, ["no such file"]) from None
    except IsADirectoryError:
        raise ConfigError(path, ["is a directory, not a config file"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text (byte {exc.start}); save the file as UTF-8"]) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already says "(at line N, column M)".
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None


def _load(model: type[_M], path: Path | str) -> _M:
    path = Path(path)
    text, data = _read_toml(path)
    try:
        return model.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(path, describe_validation_error(exc, data, text)) from None


def load_recorder_config(path: Path | str) -> RecorderConfig:
    """Read and validate a recorder's TOML config; ConfigError names every problem."""
    return _load(RecorderConfig, path)


def load_dock_config(path: Path | str) -> DockConfig:
    """Read and validate a dock's TOML config; ConfigError names every problem."""
    return _load(DockConfig, path)


def load_policy(path: Path | str) -> RecordingPolicy:
    """Read and validate a recording policy; ConfigError names every problem."""
    return _load(RecordingPolicy, path)


def default_policy_path() -> Path:
    """The recording policy shipped with the software: in the source tree, or inside the wheel."""
    package_root = Path(__file__).resolve().parents[1]
    candidates = [
        package_root / "firmware-config" / "recording-policy.toml",
        # pyproject force-includes firmware-config/ here in the wheel.
        package_root / "provisioning" / "_firmware_config" / "recording-policy.toml",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        candidates[0], [f"the shipped recording policy is missing (also looked at {candidates[1]})"]
    )


# -- turning pydantic's errors into text an IT person can act on --------------------------------


def describe_validation_error(exc: ValidationError, data: Any, text: str = "") -> list[str]:
    """One line per problem: the dotted key as written in the file, its line, and what is wrong."""
    lines = _key_lines(text) if text else {}
    out = []
    for err in exc.errors(include_url=False):
        keys = _file_keys(err["loc"], data)
        kind = err["type"]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            keys = (*keys, err.get("ctx", {}).get("discriminator", "'type'").strip("'"))
        where = _dotted(keys) or "(top level)"
        line, exact = _find_line(lines, keys)
        if line is not None:
            where += f" (line {line})" if exact else f" (near line {line})"
        out.append(f"{where}: {_explain(err)}")
    return out


def _file_keys(loc: tuple[int | str, ...], data: Any) -> tuple[int | str, ...]:
    # pydantic's location includes the tags of discriminated unions ("v4l2", "gpsd"), which are not
    # keys of the file; walk the data alongside and keep only what the file itself contains.
    keys: list[int | str] = []
    node = data
    for i, part in enumerate(loc):
        in_table = isinstance(node, dict) and part in node
        in_array = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_table or in_array:
            keys.append(part)
            node = node[part]
        elif i == len(loc) - 1:
            keys.append(part)  # a missing key: not in the data, but it is what the message is about
    return tuple(keys)


def _dotted(keys: Sequence[int | str]) -> str:
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def _explain(err: Any) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown key (not a setting here; check the spelling)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return f"must be one of {err['ctx']['expected_tags']} (got {err['ctx']['tag']!r})"
    if kind == "union_tag_not_found":
        return "missing: this table needs a type key saying which kind it is"
    msg = msg.removeprefix("Value error, ")
    if isinstance(value, str | int | float | bool) and kind not in ("value_error", "assertion_error"):
        msg += f" (got {value!r})"
    return msg


def _key_lines(text: str) -> dict[tuple[int | str, ...], int]:
    """Map each key path written in the TOML text to its line number (best effort, for messages)."""
    found: dict[tuple[int | str, ...], int] = {}
    table: tuple[int | str, ...] = ()
    array_counts: dict[tuple[str, ...], int] = {}
    in_multiline = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        # Lines inside a multi-line string are text, not keys.
        quotes = line.count('"""') + line.count("'''")
        if in_multiline:
            in_multiline = quotes % 2 == 0
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            name = _split_key(line[2:].split("]]", 1)[0])
            array_counts[name] = array_counts.get(name, -1) + 1
            table = (*name, array_counts[name])
            found.setdefault(table, number)
        elif line.startswith("["):
            table = _split_key(line[1:].split("]", 1)[0])
            found.setdefault(table, number)
        elif "=" in line:
            found.setdefault((*table, *_split_key(line.split("=", 1)[0])), number)
            in_multiline = quotes % 2 == 1
    return found


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))


def _find_line(
    lines: dict[tuple[int | str, ...], int], keys: tuple[int | str, ...]
) -> tuple[int | None, bool]:
    for n in range(len(keys), 0, -1):
        if keys[:n] in lines:
            return lines[keys[:n]], n == len(keys)
    return None, False
