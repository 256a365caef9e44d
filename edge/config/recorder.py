"""The recorder's settings (recorder.toml): sources, encoder, segments, pre-event buffer, location, spool, link."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from edge.config.base import (
    _SUN_PATH_MAX,
    OFFICER_ID_PATTERN,
    ConfigPath,
    DeviceId,
    _Config,
    _duplicates,
    default_policy_path,
)
from edge.config.dock import SERVER_CERT_NAME, SerialBaud

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


class SigningConfig(_Config):
    """The device's evidence-signing identity, as provisioning wrote it into the bundle."""

    # Defaults are validated too, so they mean "beside this config file" (the bundle), not the
    # directory the process happens to run in.
    cert: ConfigPath = Field(default=Path("signing.pem"), validate_default=True)
    key: ConfigPath = Field(default=Path("signing.key"), validate_default=True)
    # The fleet CA chain: it also vouches for server_cert (edge.recorder.link.load_server_keys).
    ca_chain: ConfigPath = Field(default=Path("ca-chain.pem"), validate_default=True)
    # The server's signing certificate: acks are checked against it before any footage is freed.
    server_cert: ConfigPath = Field(default=Path(SERVER_CERT_NAME), validate_default=True)


class RecorderLinkConfig(_Config):
    """The serial control link the dock talks to: the recorder's USB CDC-ACM gadget tty."""

    enabled: StrictBool = True
    # A device, so never resolved against the config file: /dev/ttyGS0 on the recorder image (a udev
    # symlink, or a socat pty in tests, works as well). The port may come and go (undocking, the gadget
    # set up after the service starts): the agent keeps trying to open it.
    port: Path = Path("/dev/ttyGS0")
    baud: SerialBaud = 115200

    @field_validator("port")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"must be an absolute device path such as /dev/ttyGS0, not {str(value)!r}")
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
    # A dict validated on load, so the default paths are resolved beside this file too.
    signing: SigningConfig = Field(default_factory=dict, validate_default=True)
    # No [link] table (or enabled = false): no control link; the dock can then only read the spool.
    link: RecorderLinkConfig | None = None

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

    def link_port(self) -> Path | None:
        """The control link's serial port, or None when the link is off."""
        return self.link.port if self.link is not None and self.link.enabled else None

    def policy_path(self) -> Path:
        """The recording policy file this recorder follows."""
        return self.policy if self.policy is not None else default_policy_path()
