"""The dock agent: watches for docked recorders and runs one session per recorder, all over one sync client.

A docked recorder shows up twice: its spool partition, mounted read-only under ``mount_dir`` by
``fieldproof-dock-attach@.service``, and its control link, a CDC-ACM port matching ``serial.ports``.
Both are polled (every ``[sync] poll_s``); a port is matched to its spool by the device id the recorder
gives in its ``identity`` answer — never by guessing from names. Several recorders may be docked at
once; each gets its own session thread, and the single sync client interleaves them. The sync client's
windows, back-off and session expiry come from ``[sync]`` in dock.toml (command-line flags override).
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody.errors import SpoolError
from edge.config import DockConfig, SyncConfig
from edge.config.dock import SERVER_CERT_NAME
from edge.dock.errors import DockError
from edge.dock.intake import find_spools, trust_store
from edge.dock.session import DockingSession
from edge.recorder.link import DockLink, LinkError, load_server_keys
from edge.sync.client import SyncClient, TlsFiles
from edge.sync.outbox import Outbox, OutboxRow

log = logging.getLogger(__name__)

_NTP_SYNCED = Path("/run/systemd/timesync/synchronized")


def server_cert_path(config: DockConfig, given: Path | None = None) -> Path:
    """Where the server-signing certificate is: ``given`` (--server-cert), else ``[sync] server_cert``.

    When dock.toml does not name one, ``server-signing.pem`` beside dock.toml, else beside ``[mqtt.tls]
    ca`` — where a provisioning bundle has it.
    """
    if given is not None:
        return given
    sync = config.sync
    if sync.server_cert_given:
        return sync.server_cert
    candidates = [sync.server_cert]
    if config.mqtt.tls is not None:
        candidates.append(config.mqtt.tls.ca.parent / SERVER_CERT_NAME)
    for c in candidates:
        if c.is_file():
            return c
    raise DockError(
        f"the server's signing certificate ({SERVER_CERT_NAME}) is not beside the config or the TLS CA "
        f"(looked at {', '.join(map(str, candidates))}); copy it from the dock's provisioning bundle, "
        "name it in [sync] server_cert, or give --server-cert"
    )


def dock_server_keys(config: DockConfig, cert: Path) -> dict[str, Ed25519PublicKey]:
    """The server's ack key, checked against the fleet CA chain when the config names one."""
    try:
        return load_server_keys(cert, ca_chain=config.mqtt.tls.ca if config.mqtt.tls else None)
    except LinkError as exc:
        raise DockError(str(exc)) from exc


def sync_settings(config: DockConfig, **overrides: float | int | None) -> SyncConfig:
    """``[sync]`` with the given overrides (None: as configured), held to the config's bounds."""
    try:
        return config.sync.with_overrides(**overrides)
    except ValueError as exc:
        raise DockError(f"out of bounds for [sync]: {exc}") from None


def clock_reference(config: DockConfig) -> tuple[str, bool]:
    """The reference named in clock records, and whether the dock's own clock is good enough to apply."""
    ref = config.clock.reference
    good = ref != "ntp" or _NTP_SYNCED.exists()
    return f"dock:{config.device_id}/{ref}", good


@dataclass
class _Docked:
    session: DockingSession
    thread: threading.Thread | None


class DockAgent:
    """Everything the dock does, wired from its config.

    ``poll_s``, ``retry_max_s`` and ``ack_timeout_s`` override ``[sync]`` (None: as configured); they
    are held to the same bounds.
    """

    def __init__(
        self,
        config: DockConfig,
        *,
        server_keys: dict[str, Ed25519PublicKey],
        poll_s: float | None = None,
        retry_max_s: float | None = None,
        ack_timeout_s: float | None = None,
        client_id: str | None = None,
        ports: str | None = None,
    ) -> None:
        self.config = config
        sync = sync_settings(config, poll_s=poll_s, retry_max_s=retry_max_s, ack_timeout_s=ack_timeout_s)
        self.sync = sync
        self.poll_s = sync.poll_s
        #: The control links to probe (a glob); default serial.ports (tests point it at socat ptys).
        self.ports_glob = ports or config.serial.ports
        self.outbox = Outbox(config.outbox.path)
        tls = config.mqtt.tls
        self.trust = trust_store(tls.ca if tls else None)
        self.reference, self.apply_clock = clock_reference(config)
        self._lock = threading.Lock()
        self._docked: dict[str, _Docked] = {}  # device → its session
        self._roots: dict[Path, str] = {}  # spool root → device
        self._refused_roots: set[Path] = set()
        self._ports: dict[str, str | None] = {}  # port → device (None: did not answer)
        self._links: dict[str, DockLink] = {}  # device → link
        self._stop = threading.Event()
        self.client = SyncClient(
            dock_id=config.device_id,
            brokers=config.mqtt.broker_addresses(),
            outbox=self.outbox,
            server_keys=server_keys,
            files=self.spool_root,
            prefix=config.mqtt.topic_prefix,
            tls=TlsFiles(tls.ca, tls.cert, tls.key) if tls else None,
            keepalive_s=config.mqtt.keepalive_s,
            chunk_bytes=config.chunk_bytes,
            window=sync.window,
            chunk_window=sync.chunk_window,
            retry_max_s=sync.retry_max_s,
            ack_timeout_s=sync.ack_timeout_s,
            broker_stall_s=sync.broker_stall_s,
            session_expiry_s=sync.session_expiry_s,
            client_id=client_id,
            on_final=self._on_final,
        )

    # -- what the sync client asks ------------------------------------------------------------------

    def spool_root(self, device: str) -> Path | None:
        """Where a recorder's spool is mounted now (None: not docked)."""
        with self._lock:
            d = self._docked.get(device)
        return d.session.root if d is not None and d.session.docked() else None

    def _on_final(self, row: OutboxRow) -> None:
        with self._lock:
            d = self._docked.get(row.recorder)
        if d is not None:
            d.session.event.set()

    def add_link(self, device: str, link: DockLink) -> None:
        """Use ``link`` as the control link of ``device`` (sync-once --link)."""
        with self._lock:
            self._links[device] = link

    def link_for(self, device: str) -> DockLink | None:
        """The control link that answered with this device id."""
        with self._lock:
            return self._links.get(device)

    # -- sessions -------------------------------------------------------------------------------------

    def session(self, root: Path) -> DockingSession:
        """A session for a spool (not started)."""
        return DockingSession(
            root=root,
            outbox=self.outbox,
            wake=self.client.wake,
            trust=self.trust,
            link=self.link_for,
            reference=self.reference,
            apply_clock=self.apply_clock,
            max_set_offset_ms=self.config.clock.max_set_offset_ms,
            poll_s=self.poll_s,
            on_status=self.client.recorder_status,
        )

    def attach(self, session: DockingSession, thread: threading.Thread | None = None) -> None:
        """Register a docked recorder's session (its spool is then readable by the sync client)."""
        with self._lock:
            self._docked[session.device] = _Docked(session, thread)
            self._roots[session.root] = session.device

    def _run_session(self, session: DockingSession) -> None:
        try:
            session.run(self._stop)
        except Exception:
            log.exception("%s: the docking session failed", session.device)
        finally:
            with self._lock:
                if self._docked.get(session.device, None) and self._docked[session.device].session is session:
                    del self._docked[session.device]
                self._roots.pop(session.root, None)

    def scan(self) -> None:
        """One look at the mount folder and the serial ports."""
        self._scan_ports()
        for root in find_spools(self.config.mount_dir):
            with self._lock:
                known = root in self._roots or root in self._refused_roots
            if known:
                continue
            try:
                session = self.session(root)
            except SpoolError as exc:
                log.error("%s: not a usable spool: %s", root, exc)
                self._refused_roots.add(root)
                continue
            with self._lock:
                other = self._docked.get(session.device)
            if other is not None:
                log.error(
                    "%s: %s is already docked at %s; two spools of one device — ignoring this one",
                    root,
                    session.device,
                    other.session.root,
                )
                self._refused_roots.add(root)
                continue
            log.info("%s docked (%s)", session.device, root)
            thread = threading.Thread(
                target=self._run_session, args=(session,), name=f"dock-{session.device}", daemon=True
            )
            self.attach(session, thread)
            thread.start()
        self._refused_roots = {r for r in self._refused_roots if r.exists()}

    def _scan_ports(self) -> None:
        present = set(glob.glob(self.ports_glob))
        for port in list(self._ports):
            if port not in present:
                device = self._ports.pop(port)
                with self._lock:
                    link = self._links.pop(device, None) if device else None
                if link is not None:
                    link.close()
        for port in sorted(present - set(self._ports)):
            try:
                link = DockLink(os.path.realpath(port), baud=self.config.serial.baud, timeout=2.0)
            except LinkError as exc:
                log.warning("%s", exc)
                continue
            try:
                ident = link.identity()
            except LinkError as exc:
                log.warning("%s: no identity answer (%s); will ask again", port, exc)
                link.close()
                continue
            device = ident.get("device")
            if not isinstance(device, str) or ident.get("role") != "recorder":
                log.warning("%s: %r is not a recorder's identity", port, ident)
                link.close()
                self._ports[port] = None
                continue
            log.info("%s: control link of %s (firmware %s)", port, device, ident.get("firmware"))
            self._ports[port] = device
            with self._lock:
                old = self._links.get(device)
                self._links[device] = link
            if old is not None:
                old.close()

    def run(self, stop: threading.Event | None = None) -> None:
        """Run until ``stop`` is set (SIGTERM in ``fieldproof dock run``)."""
        stop = stop or threading.Event()
        self.client.start()
        try:
            while not stop.is_set():
                try:
                    self.scan()
                except Exception:
                    log.exception("scan failed; trying again")
                stop.wait(self.poll_s)
        finally:
            self.close()

    def close(self) -> None:
        """Stop sessions, say goodbye to the broker, close links and the outbox."""
        self._stop.set()
        with self._lock:
            threads = [d.thread for d in self._docked.values() if d.thread is not None]
        for t in threads:
            t.join(timeout=10)
        self.client.stop()
        with self._lock:
            links, self._links = list(self._links.values()), {}
        for link in links:
            link.close()
        self.outbox.close()

    def status(self) -> dict[str, Any]:
        """Connection, docked recorders and outbox counts."""
        with self._lock:
            docked = {d: str(x.session.root) for d, x in self._docked.items()}
        return {
            "dock": self.config.device_id,
            "connected": self.client.connected.is_set(),
            "broker": self.client.stats.broker,
            "docked": docked,
            "outbox": self.outbox.summary(),
        }
