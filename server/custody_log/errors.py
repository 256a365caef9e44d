"""Errors of the custody log: each says what failed and what the custodian or operator can do."""

from __future__ import annotations

from server.errors import ServerError


class CustodyLogError(ServerError):
    """Base of every error raised on purpose by ``server.custody_log``."""


class LogProofError(CustodyLogError):
    """A checkpoint, inclusion proof or consistency proof does not verify: do not rely on the event."""


class NotInLogError(CustodyLogError):
    """The event, leaf or checkpoint asked for is not (yet) in the log."""


class NotSequencedError(NotInLogError):
    """The event is committed but has no leaf index yet: run the sequencer, or ask again shortly."""


class LogDamagedError(CustodyLogError):
    """The log's stored tables contradict each other (a missing node or leaf): restore from backup."""
