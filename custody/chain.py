"""Writing a device's chain: one sequence per device for its whole life, each record naming its predecessor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from custody.digest import Digest
from custody.record import FORMAT_VERSION
from custody.signing import SealedRecord, Signer, seal
from custody.timefmt import now_timestamp


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a chain stands: the next seq to use and the hash of the last record (None when empty)."""

    next_seq: int = 0
    last_hash: Digest | None = None


class ChainWriter:
    """Builds and seals the next record of one device's chain.

    The writer advances only after the caller says the record is durable (``commit``): a record that
    was sealed but never reached the journal does not burn its seq, so no gap appears for it.
    """

    def __init__(self, *, device: str, signer: Signer, head: ChainHead) -> None:
        self.device = device
        self.signer = signer
        self.head = head

    def seal_next(self, kind: str, body: dict[str, Any], *, time: str | None = None) -> SealedRecord:
        """Seal the record that would come next; call ``commit`` once it is durably written."""
        record: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "device": self.device,
            "seq": self.head.next_seq,
            "prev": self.head.last_hash,
            "kind": kind,
            "time": time or now_timestamp(),
            "body": body,
        }
        return seal(record, self.signer)

    def commit(self, sealed: SealedRecord) -> None:
        """Advance the head past ``sealed`` (which must be the record ``seal_next`` produced)."""
        if sealed.record["seq"] != self.head.next_seq or sealed.record["prev"] != self.head.last_hash:
            raise ValueError("commit() of a record that is not the chain's next one")
        self.head = ChainHead(next_seq=self.head.next_seq + 1, last_hash=sealed.hash)
