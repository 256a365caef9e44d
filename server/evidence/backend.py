"""The evidence store the settings choose: the local directory store or the S3 one (docs/object-store.md).

The one place that constructs a store from settings, so the ingest worker, the API and the command line
agree; boto3 is imported only when the S3 store is chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.evidence.store import BlobStore, LocalBlobStore

if TYPE_CHECKING:
    from server.config import ServerSettings


def make_blob_store(settings: ServerSettings) -> BlobStore:
    """``FIELDPROOF_STORE_BACKEND``: ``local`` (default) or ``s3``; StoreError if the S3 bucket is unusable."""
    if settings.store_backend == "s3":
        from server.evidence.s3 import S3BlobStore

        return S3BlobStore.from_settings(settings)
    return LocalBlobStore(settings.store_root, settings.staging_dir)
