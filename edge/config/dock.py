"""The dock's settings (dock.toml): where spools appear, the control link, MQTT brokers, sync, outbox, clock."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Final, Literal

from pydantic import (
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from edge.config.base import (
    ConfigPath,
    DeviceId,
    _Config,
    _duplicates,
)

# -- dock --------------------------------------------------------------------------------------

#: Baud rates of the control link, on both ends (a CDC-ACM gadget ignores the rate; a real UART does not).
SerialBaud = Literal[9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600]


class SerialConfig(_Config):
    """The serial control links to docked recorders (USB CDC-ACM, named by the udev rule)."""

    ports: StrictStr = Field(default="/dev/fieldproof-ctl-*", pattern=r"^/dev/")
    baud: SerialBaud = 115200


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
    # While nothing is outstanding, a hung broker is noticed only by keepalive (about 2 × this); it also
    # sets how soon the broker publishes the dock's "offline" will when the dock vanishes (1.5 ×).
    keepalive_s: StrictInt = Field(default=30, ge=5, le=3600)
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


#: The most records awaiting the server's answer per recorder (docs/sync-protocol.md §5, "window").
MAX_WINDOW: Final = 16
#: Unacknowledged chunk bytes per recorder: paho holds each one in memory until the broker's PUBACK.
MAX_CHUNK_BYTES_IN_FLIGHT: Final = 64 * 1024 * 1024
SERVER_CERT_NAME: Final = "server-signing.pem"


class SyncConfig(_Config):
    """How the dock sends to the server, and the certificate it checks the server's signed acks with."""

    # The server's ack-signing certificate. Not written: server-signing.pem beside this file, else
    # beside [mqtt.tls] ca (where a provisioning bundle puts it). It is accepted only if it chains to
    # the fleet CA chain ([mqtt.tls] ca), so a planted file cannot make the dock trust forged acks.
    server_cert: ConfigPath = Field(default=Path(SERVER_CERT_NAME), validate_default=True)
    # Records awaiting the server's last word, and file chunks awaiting its `pending` ack, per recorder.
    window: StrictInt = Field(default=MAX_WINDOW, ge=1, le=MAX_WINDOW)
    chunk_window: StrictInt = Field(default=32, ge=1, le=32)
    # The longest back-off between broker rounds and between resends (a resend waits ack_timeout_s
    # first, doubling per attempt up to retry_max_s).
    retry_max_s: float = Field(default=60.0, ge=1.0, le=3600.0, strict=True)
    ack_timeout_s: float = Field(default=10.0, ge=0.5, le=600.0, strict=True)
    # The liveness watchdog: publications awaiting their PUBACK and nothing at all from the broker for
    # this long → the broker is taken as hung, the dock moves to the next one. Must exceed the time one
    # chunk (chunk_bytes) takes over the dock's uplink, else a slow link reads as a hung broker.
    broker_stall_s: float = Field(default=15.0, ge=2.0, le=3600.0, strict=True)
    # How long the broker keeps the dock's session (and acks published to it) while the dock is away.
    session_expiry_s: StrictInt = Field(default=3600, ge=60, le=7 * 86_400)
    # How often `dock run` looks for docked spools and control links.
    poll_s: float = Field(default=1.0, ge=0.1, le=60.0, strict=True)

    @property
    def server_cert_given(self) -> bool:
        """Whether the file names ``server_cert`` (else the default places are searched)."""
        return "server_cert" in self.model_fields_set

    def with_overrides(self, **changes: float | int | None) -> SyncConfig:
        """This table with command-line overrides (None: keep), held to the same bounds.

        ValueError names each value out of bounds; the result still knows whether ``server_cert``
        was written in the file.
        """
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(given) - set(type(self).model_fields))
        if unknown:
            raise ValueError(f"not settings of [sync]: {', '.join(unknown)}")
        if not given:
            return self
        data = {name: getattr(self, name) for name in type(self).model_fields} | given
        try:
            checked = type(self).model_validate(data)
        except ValidationError as exc:
            problems = [
                f"{'.'.join(map(str, e['loc'])) or '[sync]'}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors(include_url=False)
            ]
            raise ValueError("; ".join(problems)) from None
        return self.model_copy(update={k: getattr(checked, k) for k in given})


class DockConfig(_Config):
    """Everything a docking station needs to know (firmware-config/dock.example.toml)."""

    device_id: DeviceId
    # Where docked recorders' spools are mounted (read-only) by fieldproof-dock-attach@.service.
    mount_dir: ConfigPath = Path("/media/fieldproof")
    chunk_bytes: StrictInt = Field(default=1024 * 1024, ge=16 * 1024, le=8 * 1024 * 1024)
    serial: SerialConfig = SerialConfig()
    mqtt: MqttConfig
    # A dict validated on load, so a default server_cert is resolved beside this file too.
    sync: SyncConfig = Field(default_factory=dict, validate_default=True)
    outbox: OutboxConfig
    clock: DockClockConfig = DockClockConfig()

    @model_validator(mode="after")
    def _chunks_in_flight_fit_in_memory(self) -> DockConfig:
        in_flight = self.sync.chunk_window * self.chunk_bytes
        if in_flight > MAX_CHUNK_BYTES_IN_FLIGHT:
            raise ValueError(
                f"sync.chunk_window ({self.sync.chunk_window}) × chunk_bytes ({self.chunk_bytes}) = "
                f"{in_flight} bytes in flight per recorder, more than {MAX_CHUNK_BYTES_IN_FLIGHT}; "
                "lower one of them"
            )
        return self
