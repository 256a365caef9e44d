"""The recorder's journal and spool: durable media files and the append-only signed chain."""

from edge.journal.journal import Journal, read_head
from edge.journal.spool import SpoolWriter

__all__ = ["Journal", "SpoolWriter", "read_head"]
