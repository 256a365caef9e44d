"""The server's settings (environment variables ``FIELDPROOF_*``), checked before anything starts.

A ``ServerSettings`` object is made once by the command line and passed to whatever needs it; no
module reads the environment by itself.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge.sync.protocol import DEFAULT_PREFIX
from server.errors import SettingsError

_TOPIC_LEVEL_RE: Final = re.compile(r"^[A-Za-z0-9._-]+$")
_DB_SCHEMES: Final = ("sqlite://", "postgresql+psycopg://")
#: Files the ingest worker reads from the provisioning CA directory (docs/provisioning.md).
INGEST_CA_FILES: Final = (
    "root-ca.pem",
    "ca-chain.pem",
    "crl.pem",
    "revocations.json",
    "ingest.pem",
    "ingest.key",
    "server-signing.pem",
    "server-signing.key",
)


class ServerSettings(BaseSettings):
    """Where the server keeps its data, which CA it trusts, and how it reaches the broker."""

    model_config = SettingsConfigDict(env_prefix="FIELDPROOF_", extra="forbid", frozen=True)

    data_dir: Path = Field(
        default=Path("/var/lib/fieldproof"), description="the server's own files: SQLite database, staging"
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/fieldproof.db"
    )
    store: Path | None = Field(default=None, description="evidence store root; default <data_dir>/store")
    #: Where footage and text records go (docs/object-store.md): ``local`` (a directory, the embedded
    #: default) or ``s3`` (an S3-compatible object store with Object Lock: SeaweedFS, MinIO, Ceph RGW, S3).
    store_backend: Literal["local", "s3"] = "local"
    s3_endpoint: str | None = Field(default=None, description="e.g. http://127.0.0.1:8333; none: AWS's own")
    s3_region: str = "us-east-1"
    s3_bucket: str | None = Field(default=None, description="the evidence bucket, created with Object Lock")
    s3_prefix: str = Field(default="", description="key prefix inside the bucket, e.g. bureau-a/")
    #: Credentials; when unset, boto3's own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles…).
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    #: COMPLIANCE retention put on every committed blob, in days from commit; 0 = no Object Lock.
    #: The default covers the 6-month floor of non-case footage (docs/retention.md).
    s3_object_lock_days: int = Field(default=184, ge=0, le=36500)
    s3_part_size: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024 * 1024 * 1024)
    ca_dir: Path | None = Field(default=None, description="the provisioning CA directory")
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=8883, ge=1, le=65535)
    topic_prefix: str = DEFAULT_PREFIX
    share_group: str = "ingest"
    #: MQTT v5 Receive Maximum: unacknowledged QoS 1 messages the broker may have in flight to this worker
    #: (messages are PUBACKed only once handled). Mosquitto 2.0.11 keeps to it only for the first window,
    #: so the worker also bounds its backlog by bytes (server/ingest/worker.py).
    receive_maximum: int = Field(default=64, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        levels = v.split("/")
        if not v or not all(_TOPIC_LEVEL_RE.match(level) for level in levels):
            raise ValueError(
                "must be topic levels of letters, digits, '.', '_' or '-' joined by '/' "
                "(no wildcards, no leading or trailing '/'), e.g. fieldproof/v1"
            )
        return v

    @field_validator("share_group")
    @classmethod
    def _group(cls, v: str) -> str:
        if not _TOPIC_LEVEL_RE.match(v):
            raise ValueError("must be one topic level of letters, digits, '.', '_' or '-'")
        return v

    @field_validator("database_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(_DB_SCHEMES):
            raise ValueError(
                f"{v.split(':', 1)[0]!r} is not supported: use sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST:PORT/DB"
            )
        return v

    @model_validator(mode="after")
    def _s3(self) -> ServerSettings:
        if self.store_backend == "s3" and not self.s3_bucket:
            raise ValueError(
                "store_backend s3 needs FIELDPROOF_S3_BUCKET (and usually FIELDPROOF_S3_ENDPOINT)"
            )
        if self.s3_prefix and (self.s3_prefix.startswith("/") or not self.s3_prefix.endswith("/")):
            raise ValueError("s3_prefix must be empty or end with '/' and not start with it, e.g. bureau-a/")
        return self

    @model_validator(mode="after")
    def _absolute(self) -> ServerSettings:
        for name in ("data_dir", "store", "ca_dir"):
            p = getattr(self, name)
            if p is not None and not p.is_absolute():
                raise ValueError(f"{name} must be an absolute path, not {str(p)!r}")
        return self

    # -- derived ---------------------------------------------------------------------------------

    @property
    def db_url(self) -> str:
        """The database URL, the SQLite default filled in."""
        return self.database_url or f"sqlite:///{self.data_dir / 'fieldproof.db'}"

    @property
    def store_root(self) -> Path:
        """The evidence store's root directory."""
        return self.store or self.data_dir / "store"

    @property
    def staging_dir(self) -> Path:
        """Where partly received files wait (under the data directory)."""
        return self.data_dir / "staging"

    # -- checks before starting ------------------------------------------------------------------

    def check_data_dir(self) -> None:
        """Refuse a data directory (or store) that cannot be created or written."""
        for what, path in (("data_dir", self.data_dir), ("store", self.store_root)):
            try:
                path.mkdir(parents=True, exist_ok=True, mode=0o750)
            except OSError as exc:
                raise SettingsError(
                    f"{what} {path} cannot be created ({exc.strerror}); set FIELDPROOF_{what.upper()} "
                    "to a directory this account may write"
                ) from None
            if not path.is_dir():
                raise SettingsError(f"{what} {path} is not a directory")
            try:
                # A name of its own: several workers on one host share the data directory and start at
                # once (a fixed probe name raced: one unlinked the other's, which then failed).
                with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
                    pass
            except OSError as exc:
                raise SettingsError(f"{what} {path} is not writable ({exc.strerror})") from None

    def check_ca_dir(self) -> Path:
        """The CA directory, after checking it holds everything ingest reads; else SettingsError."""
        if self.ca_dir is None:
            raise SettingsError(
                "no CA directory: set FIELDPROOF_CA_DIR to the provisioning CA directory "
                "(the one `fieldproof provision init-ca` made)"
            )
        missing = [name for name in INGEST_CA_FILES if not (self.ca_dir / name).is_file()]
        if missing:
            raise SettingsError(
                f"the CA directory {self.ca_dir} lacks {', '.join(missing)}; point FIELDPROOF_CA_DIR at "
                "a directory made by `fieldproof provision init-ca`"
            )
        unreadable = [n for n in INGEST_CA_FILES if not _readable(self.ca_dir / n)]
        if unreadable:
            raise SettingsError(
                f"cannot read {', '.join(unreadable)} in {self.ca_dir}: run the server as the account "
                "that owns them"
            )
        return self.ca_dir


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError:
        return False
    return True


def load_settings(**overrides: object) -> ServerSettings:
    """Settings from the environment, with ``overrides`` (None values ignored); SettingsError if unusable."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return ServerSettings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(f"unusable server settings (FIELDPROOF_* variables): {problems}") from None
