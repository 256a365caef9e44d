"""The device's config file, made from the example in firmware-config/ with its id and certificate paths.

Every file of the bundle a config refers to is filled in, so a freshly enrolled bundle works without
hand edits: the TLS identity, the signing identity and fleet CA chain, and the server's signing
certificate (``server-signing.pem``: a recorder's ``[signing] server_cert``, a dock's ``[sync]
server_cert``), against which devices check the acks before footage is freed. A recorder also gets a
``[link]`` (the control link on its USB gadget) when the example has none.

The substitution works on the parsed TOML, not on text: the example's comments are lost, but a key
can never be half-replaced or matched inside a comment. Paths are written relative to the config
file (the loaders in ``edge.config`` resolve them against the file's directory), so the bundle works
where it was made (the demo) and after being copied to ``/etc/fieldproof/`` on a device.
"""

from __future__ import annotations

import copy
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fieldproof.durable import write_file
from fieldproof.errors import FieldproofError
from provisioning.errors import ProvisioningError
from provisioning.layout import (
    BUNDLE_CHAIN,
    BUNDLE_SERVER_SIGNING,
    SIGNING_CERT,
    SIGNING_KEY,
    TLS_CERT,
    TLS_KEY,
    config_name,
)
from provisioning.toml_writer import dumps

_HERE = Path(__file__).resolve().parent
# In a source checkout the examples sit in firmware-config/ at the top; a wheel carries them inside
# this package (pyproject: force-include firmware-config -> provisioning/_firmware_config).
_EXAMPLE_DIRS = (_HERE.parent / "firmware-config", _HERE / "_firmware_config")

#: Files of the bundle by the table that names them: ``[… .tls]`` is the MQTT client identity,
#: ``[… .signing]`` the evidence-signing identity, ``[sync]`` the dock's sending to the server.
_TABLE_FILES: dict[str, dict[str, str]] = {
    "tls": {"ca": BUNDLE_CHAIN, "cert": TLS_CERT, "key": TLS_KEY},
    "signing": {
        "cert": SIGNING_CERT,
        "key": SIGNING_KEY,
        "ca_chain": BUNDLE_CHAIN,
        "server_cert": BUNDLE_SERVER_SIGNING,
    },
    "sync": {"server_cert": BUNDLE_SERVER_SIGNING},
}
#: Per role, the bundle files a config must name even when the example leaves them out: without the
#: server's signing certificate no ack could be checked, and no footage ever freed.
_REQUIRED_FILES: dict[str, dict[str, dict[str, str]]] = {
    "recorder": {"signing": _TABLE_FILES["signing"]},
    "dock": {"sync": _TABLE_FILES["sync"]},
}
#: The recorder's end of the control link on a recorder image: the USB CDC-ACM gadget's tty.
RECORDER_LINK: dict[str, Any] = {"enabled": True, "port": "/dev/ttyGS0"}
#: Flat keys some configs use instead of a table.
_FLAT_FILES: dict[str, str] = {
    "tls_ca": BUNDLE_CHAIN,
    "tls_cert": TLS_CERT,
    "tls_key": TLS_KEY,
    "signing_cert": SIGNING_CERT,
    "signing_key": SIGNING_KEY,
}


def example_path(role: str) -> Path:
    """The example config for ``role`` shipped with Fieldproof."""
    name = f"{role}.example.toml"
    for d in _EXAMPLE_DIRS:
        if (d / name).is_file():
            return d / name
    raise ProvisioningError(
        f"the example config {name} is missing from firmware-config/; reinstall Fieldproof"
    )


def render(example: dict[str, Any], *, device: str, role: str | None = None) -> dict[str, Any]:
    """The example's data with the device id and the bundle's certificate file names put in.

    With ``role``, the files that role's config must name are filled in even where the example leaves
    them out, and a recorder without a ``[link]`` table gets one (an example's ``[link]`` is kept).
    """
    if "device_id" not in example:
        raise ProvisioningError(
            "the example config has no top-level device_id; firmware-config/ and provisioning disagree"
        )
    data = copy.deepcopy(example)
    data["device_id"] = device
    _substitute_paths(data)
    for table, files in _REQUIRED_FILES.get(role or "", {}).items():
        section = data.setdefault(table, {})
        if not isinstance(section, dict):
            raise ProvisioningError(f"the example config's {table!r} is not a table")
        section.update(files)
    if role == "recorder":
        data.setdefault("link", dict(RECORDER_LINK))
    return data


def _substitute_paths(table: dict[str, Any]) -> None:
    for key, value in table.items():
        if isinstance(value, dict):
            files = _TABLE_FILES.get(key, {})
            for field, filename in files.items():
                if field in value:
                    value[field] = filename
            _substitute_paths(value)
        elif key in _FLAT_FILES:
            table[key] = _FLAT_FILES[key]


@dataclass(frozen=True)
class DeviceConfigFiles:
    """A rendered, validated config file and the files it refers to (a recording policy)."""

    name: str
    text: bytes
    extras: dict[str, bytes]


def _validate(files: DeviceConfigFiles, role: str) -> None:
    """Load the config with the device's own loader, so a bundle never ships a config it rejects."""
    try:
        from edge.config import load_dock_config, load_recorder_config
    except ImportError:  # a CA machine without the edge package: nothing to check against
        return
    loader = load_recorder_config if role == "recorder" else load_dock_config
    with tempfile.TemporaryDirectory(prefix="fieldproof-config-") as tmp:
        for name, data in files.extras.items():
            (Path(tmp) / name).write_bytes(data)
        path = Path(tmp) / files.name
        path.write_bytes(files.text)
        try:
            loader(path)
        except FieldproofError as exc:  # ConfigError: its text names every problem and its line
            raise ProvisioningError(
                f"the {files.name} made from {example_path(role)} does not validate; fix the example: {exc}"
            ) from None


def build_device_config(*, device: str, role: str) -> DeviceConfigFiles:
    """Render the example for ``device`` and check it with the edge loader; nothing is written."""
    example = example_path(role)
    try:
        data = tomllib.loads(example.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProvisioningError(f"{example} is not valid TOML ({exc})") from None
    rendered = render(data, device=device, role=role)
    extras: dict[str, bytes] = {}
    # A policy file named relative to the example travels with the bundle, so the relative path
    # still points at it after the bundle is installed.
    policy = rendered.get("policy")
    if isinstance(policy, str) and not Path(policy).is_absolute():
        source = example.parent / policy
        if source.is_file():
            extras[Path(policy).name] = source.read_bytes()
            rendered["policy"] = Path(policy).name
    files = DeviceConfigFiles(config_name(role), dumps(rendered).encode(), extras)
    _validate(files, role)
    return files


def write_device_config(bundle: Path, files: DeviceConfigFiles) -> Path:
    """Write a built config (and its extras) into a bundle; return the config's path."""
    for name, data in files.extras.items():
        write_file(bundle / name, data)
    write_file(bundle / files.name, files.text)
    return bundle / files.name
