"""The dock's settings (dock.toml): where spools appear, the control link, MQTT brokers, outbox, clock."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Final, Literal

from pydantic import (
    Field,
    StrictInt,
    StrictStr,
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
