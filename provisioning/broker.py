"""Mosquitto configuration for the fleet: mutual TLS, identity from the certificate CN, per-device ACL.

The broker gets its own copies of the files it reads (server key, chain, CRL) in the output
directory, owned by the user the broker runs as: Mosquitto started as root drops to that user
*before* it loads keys, so a root-owned 0600 key in the CA directory would be unreadable to it.
After a revocation, re-run this and send the broker SIGHUP: Mosquitto reads the CRL only when it
(re)loads its listeners, and a reload checks new connections only — a restart also drops a revoked
device that is connected at that moment.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from datetime import datetime
from pathlib import Path

from fieldproof.durable import PRIVATE_DIR, PRIVATE_FILE, PUBLIC_FILE, make_dir, write_file
from provisioning import certificates as c
from provisioning.ca import load_device_ca, open_ca
from provisioning.crl import load_crl
from provisioning.errors import ProvisioningError
from provisioning.layout import INGEST_CN, CaLayout

CONF = "mosquitto.conf"
ACL = "acl"
CAFILE = "ca-chain.pem"
CERTFILE = "server-chain.pem"
KEYFILE = "server.key"
CRLFILE = "crl.pem"
PERSISTENCE = "persistence"

# See FACTS.md: past max_queued_messages (default 1000) Mosquitto silently drops QoS 1 messages to a
# subscriber that falls behind. Delivery still rests on the server's application ack.
MAX_QUEUED = 100000

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def _check(*, port: int, bind: str, prefix: str) -> None:
    if not 1 <= port <= 65535:
        raise ProvisioningError(f"--port {port} is not a TCP port (1–65535)")
    try:
        c.general_name(bind)
    except ProvisioningError:
        raise ProvisioningError(f"--bind {bind!r} is not an address or host name") from None
    if not _PREFIX_RE.fullmatch(prefix):
        raise ProvisioningError(
            f"--prefix {prefix!r} must be topic levels of letters, digits, '_', '-', '.', joined by '/'"
            " (no wildcards, no leading or trailing '/'), e.g. fieldproof/v1"
        )


def _account(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ProvisioningError(
            f"user {user!r} does not exist on this machine; pass --user with the account Mosquitto runs as"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _can_traverse(path: Path, uid: int, gid: int, groups: set[int]) -> bool:
    st = path.stat()
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid or st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _check_reachable(out: Path, user: str, uid: int, gid: int) -> None:
    groups = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    for parent in out.absolute().parents:
        if not _can_traverse(parent, uid, gid, groups):
            raise ProvisioningError(
                f"the broker will run as {user!r}, which cannot enter {parent}"
                f" (mode {stat.filemode(parent.stat().st_mode)});"
                f" put --out somewhere {user!r} can reach, or pass --user for an account that can"
            )


def crl_valid_until(layout: CaLayout) -> datetime:
    """When the CA's CRL expires; ProvisioningError if it already has."""
    next_update = load_crl(layout.crl, issuer=load_device_ca(layout)).next_update
    if next_update <= c.utc_now():
        raise ProvisioningError(
            f"{layout.crl} expired at {c.iso_z(next_update)}; Mosquitto would refuse every device with it."
            " Run `fieldproof provision refresh-crl` first"
        )
    return next_update


def acl_text(prefix: str) -> str:
    """The ACL: each device its own subtree (``%u`` is the certificate CN); the ingest identity all."""
    return (
        "# Written by `fieldproof provision broker-config`. The username is the client certificate's CN\n"
        "# (use_identity_as_username), so a device can only touch topics under its own id.\n"
        f"pattern readwrite {prefix}/dev/%u/#\n"
        "\n"
        "# The server's ingest workers (CN fieldproof-ingest) read and write every device's topics.\n"
        f"user {INGEST_CN}\n"
        f"topic readwrite {prefix}/#\n"
    )


def conf_text(*, out: Path, port: int, bind: str, user: str | None) -> str:
    """mosquitto.conf for one mutual-TLS listener, files taken from ``out``."""
    d = out.absolute()
    lines = [
        "# Written by `fieldproof provision broker-config`; re-run it after every revocation, then send",
        "# the broker SIGHUP (or restart it): Mosquitto reads the CRL only when it loads its listeners.",
        "per_listener_settings false",
        *([f"user {user}"] if user else []),
        "allow_anonymous false",
        f"acl_file {d / ACL}",
        f"max_queued_messages {MAX_QUEUED}",
        "persistence true",
        # Mosquitto wants the trailing slash: it appends the file name to the location as a string.
        f"persistence_location {d / PERSISTENCE}/",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "",
        f"listener {port} {bind}",
        "protocol mqtt",
        # The chain: the device CA to anchor device certificates (clients send only their leaf), the
        # root so the chain ends at a self-signed anchor.
        f"cafile {d / CAFILE}",
        # Server leaf + device CA, so a client that trusts only root-ca.pem can build the path.
        f"certfile {d / CERTFILE}",
        f"keyfile {d / KEYFILE}",
        f"crlfile {d / CRLFILE}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "",
    ]
    return "\n".join(lines)


def write_broker_config(
    ca_dir: Path,
    *,
    out: Path,
    port: int,
    bind: str = "127.0.0.1",
    prefix: str = "fieldproof/v1",
    user: str | None = None,
) -> Path:
    """Write mosquitto.conf, acl and copies of the broker's TLS files into ``out``; return the conf path.

    ``user``: the account Mosquitto runs as. When given and this runs as root, ``out`` and its files
    are handed to that user; when None, the broker is expected to run as the current user (as root,
    ``user root`` is written so that Mosquitto does not drop to ``mosquitto``).
    """
    layout = open_ca(ca_dir)
    _check(port=port, bind=bind, prefix=prefix)
    crl_valid_until(layout)  # an expired CRL would lock every device out: refuse before writing
    out = Path(out)
    as_root = os.geteuid() == 0
    owner: tuple[int, int] | None = None
    if user is None:
        user = pwd.getpwuid(os.geteuid()).pw_name
    else:
        account = _account(user)  # a missing account would stop Mosquitto at start-up, when run as root
        if as_root:
            owner = account
    # Missing parents are made traversable (they hold nothing secret); OUT itself is 0700.
    make_dir(out.absolute().parent, mode=0o755)
    if owner is not None and owner[0] != 0:
        _check_reachable(out, user, *owner)
    make_dir(out)
    persistence = out / PERSISTENCE
    make_dir(persistence)
    if owner is not None:
        # The broker must enter OUT and write its database in persistence/.
        for d in (out, persistence):
            os.chown(d, *owner)
            os.chmod(d, PRIVATE_DIR)
    conf = out / CONF
    files = {
        KEYFILE: layout.server_key.read_bytes(),
        CAFILE: layout.chain.read_bytes(),
        CERTFILE: layout.server_cert.read_bytes() + layout.device_ca_cert.read_bytes(),
        CRLFILE: layout.crl.read_bytes(),
        ACL: acl_text(prefix).encode(),
        CONF: conf_text(out=out, port=port, bind=bind, user=user).encode(),
    }
    for name, data in files.items():
        path = out / name
        # Unchanged files are left alone: after a revocation only crl.pem is replaced, so a broker
        # reloading meanwhile never meets a fresh root-owned 0600 server.key it cannot open.
        if not (path.is_file() and path.read_bytes() == data):
            write_file(path, data, mode=PRIVATE_FILE if name == KEYFILE else PUBLIC_FILE)
        if owner is not None:
            os.chown(path, *owner)
    return conf


def written_files(out: Path) -> list[Path]:
    """The files write_broker_config writes, for reporting."""
    return [out / n for n in (CONF, ACL, CAFILE, CERTFILE, KEYFILE, CRLFILE)]
