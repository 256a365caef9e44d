"""The chain verifier: reads a device's journal and media and reports every finding, record by record.

Stage one (``custody.examine``) looks at each line by itself, on all cores. Stage two, here, checks what
needs the whole: trust and revocation, sequence, links, forks, clocks and files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custody.digest import Digest, file_digests
from custody.examine import RecordFacts, examine_lines
from custody.findings import Finding, FindingCode, Severity
from custody.spool import Spool
from custody.timefmt import utc_timestamp
from custody.trust import KeyStatus, SigningKey, TrustStore


@dataclass(slots=True)
class RecordStatus:
    """The verdict on one journal line."""

    line: int
    seq: int | None
    kind: str
    time: str
    hash: str
    sound: bool
    findings: list[FindingCode] = field(default_factory=list)


@dataclass
class ChainReport:
    """Everything verification found about one device's chain."""

    device: str
    source: str
    records: list[RecordStatus]
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)

    @property
    def all_sound(self) -> bool:
        """True when there is nothing to report at all."""
        return not self.findings

    @property
    def sound_seqs(self) -> list[int]:
        """Seqs of the records that remain sound."""
        return [r.seq for r in self.records if r.sound and r.seq is not None]

    def codes(self) -> set[FindingCode]:
        """The kinds of finding present."""
        return {f.code for f in self.findings}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view (the ``--json`` output)."""
        return {
            "device": self.device,
            "source": self.source,
            "all_sound": self.all_sound,
            "records": len(self.records),
            "sound": len([r for r in self.records if r.sound]),
            "sound_ranges": [list(r) for r in seq_ranges(self.sound_seqs)],
            "findings": [f.to_json() for f in self.findings],
            "notes": self.notes,
            "per_record": [
                {
                    "line": r.line,
                    "seq": r.seq,
                    "kind": r.kind,
                    "time": r.time,
                    "hash": r.hash,
                    "sound": r.sound,
                    "findings": [str(c) for c in r.findings],
                }
                for r in self.records
            ],
        }


def seq_ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Collapse seqs into inclusive ranges: [0,1,2,5] → [(0,2),(5,5)]."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


class ChainVerifier:
    """Verifies one device's chain against a trust store."""

    def __init__(self, trust: TrustStore, *, workers: int | None = None) -> None:
        self.trust = trust
        self.workers = workers

    def verify_spool(self, spool: Spool, *, expect_last: tuple[int, str | None] | None = None) -> ChainReport:
        """Verify a recorder spool: journal, certificates and media."""
        self.trust.add_untrusted(spool.certificates())
        return self.verify(
            device=spool.device,
            lines=spool.read_journal(),
            keys=self.trust.signing_keys(spool.certificates()),
            media_dir=spool.media_dir,
            media_files=spool.media_files(),
            source=str(spool.root),
            expect_last=expect_last,
        )

    def verify(
        self,
        *,
        device: str,
        lines: Sequence[bytes],
        keys: Mapping[Digest, SigningKey],
        media_dir: Path | None,
        media_files: set[str] | None = None,
        source: str = "",
        expect_last: tuple[int, str | None] | None = None,
    ) -> ChainReport:
        """Verify journal lines of ``device`` with media under ``media_dir`` (None: records only)."""
        public = {str(k): v.public_key for k, v in keys.items() if v.public_key}
        facts = examine_lines(lines, public, workers=self.workers)
        findings: list[Finding] = []
        per_line: dict[int, list[Finding]] = {}

        def add(finding: Finding) -> None:
            findings.append(finding)
            if finding.line is not None:
                per_line.setdefault(finding.line, []).append(finding)

        good = self._check_records(device, facts, keys, add)
        # A record whose signature does not hold says nothing reliable about its successor's link.
        unauthentic = {
            x.line
            for x in findings
            if x.code in (FindingCode.BAD_SIGNATURE, FindingCode.UNKNOWN_DEVICE, FindingCode.FOREIGN_CA)
        }
        self._check_chain(good, unauthentic, add, expect_last)
        self._check_clock(good, add)
        if media_dir is not None:
            # Files freed after the server's ack are gone on purpose: only an authentic release counts.
            released = {r for f in good if f.line not in unauthentic for r in f.released}
            self._check_files(good, media_dir, media_files, add, released)
        for note in self.trust.crl_notes:
            add(Finding(FindingCode.STALE_CRL, note))

        records = [
            RecordStatus(
                line=f.line,
                seq=f.seq,
                kind=f.kind,
                time=f.time,
                hash=f.hash,
                sound=not any(x.severity is Severity.ERROR for x in per_line.get(f.line, [])),
                findings=[x.code for x in per_line.get(f.line, [])],
            )
            for f in facts
        ]
        findings.sort(key=lambda x: (x.seq if x.seq is not None else -1, x.line or 0, x.code))
        notes = []
        if not self.trust.revocation_checked:
            notes.append("No CRL was given (--crl): revocations were not checked.")
        return ChainReport(device=device, source=source, records=records, findings=findings, notes=notes)

    # -- stage 2: per record, with trust ----------------------------------------------------------

    def _check_records(
        self, device: str, facts: list[RecordFacts], keys: Mapping[Digest, SigningKey], add: Any
    ) -> list[RecordFacts]:
        good: list[RecordFacts] = []
        for f in facts:
            if not f.ok:
                add(Finding(FindingCode.MALFORMED, f"line {f.line}: {f.problem}", seq=f.seq, line=f.line))
                continue
            good.append(f)
            where = f"record {f.seq} (line {f.line}, {f.kind})"
            if f.device != device:
                add(
                    Finding(
                        FindingCode.WRONG_DEVICE,
                        f"{where} belongs to device {f.device}, not {device}",
                        seq=f.seq,
                        line=f.line,
                    )
                )
            key = keys.get(Digest(f.key))
            if key is None:
                add(
                    Finding(
                        FindingCode.UNKNOWN_DEVICE,
                        f"{where} is signed by key {f.key[:19]}…, for which no certificate is known",
                        seq=f.seq,
                        line=f.line,
                    )
                )
                continue
            if key.status is KeyStatus.FOREIGN_CA:
                add(Finding(FindingCode.FOREIGN_CA, f"{where}: {key.detail}", seq=f.seq, line=f.line))
            elif key.status is not KeyStatus.TRUSTED:
                add(Finding(FindingCode.UNKNOWN_DEVICE, f"{where}: {key.detail}", seq=f.seq, line=f.line))
            elif key.device != f.device:
                add(
                    Finding(
                        FindingCode.UNKNOWN_DEVICE,
                        f"{where} claims device {f.device} but is signed with the key of {key.device}",
                        seq=f.seq,
                        line=f.line,
                    )
                )
            if not f.signature_ok:
                add(
                    Finding(
                        FindingCode.BAD_SIGNATURE,
                        f"{where}: the signature does not match the record",
                        seq=f.seq,
                        line=f.line,
                    )
                )
            if not utc_timestamp(key.not_before) <= f.time <= utc_timestamp(key.not_after):
                add(
                    Finding(
                        FindingCode.CERT_NOT_VALID,
                        f"{where} is dated {f.time}, outside its certificate's validity "
                        f"{utc_timestamp(key.not_before)} – {utc_timestamp(key.not_after)}",
                        seq=f.seq,
                        line=f.line,
                    )
                )
            if key.revoked_at is not None and f.time >= utc_timestamp(key.revoked_at):
                add(
                    Finding(
                        FindingCode.REVOKED,
                        f"{where} is dated {f.time}, after device {key.device} was revoked at "
                        f"{utc_timestamp(key.revoked_at)}",
                        seq=f.seq,
                        line=f.line,
                    )
                )
        return good

    # -- stage 2: the chain -----------------------------------------------------------------------

    def _check_chain(
        self,
        good: list[RecordFacts],
        unauthentic: set[int | None],
        add: Any,
        expect_last: tuple[int, str | None] | None,
    ) -> None:
        by_seq: dict[int, list[RecordFacts]] = {}
        highest = -1
        for f in good:
            assert f.seq is not None
            if f.seq <= highest and f.seq not in by_seq:
                add(
                    Finding(
                        FindingCode.REORDERED,
                        f"record {f.seq} (line {f.line}) comes after record {highest} in the journal",
                        seq=f.seq,
                        line=f.line,
                    )
                )
            highest = max(highest, f.seq)
            by_seq.setdefault(f.seq, []).append(f)

        hashes_at: dict[int, set[str]] = {}
        authentic_at: dict[int, set[str]] = {}
        for seq, group in by_seq.items():
            authentic_at[seq] = {f.hash for f in group if f.line not in unauthentic}
            first_hash: dict[str, RecordFacts] = {}
            for f in group:
                if f.hash in first_hash:
                    add(
                        Finding(
                            FindingCode.DUPLICATE,
                            f"record {seq} appears again on line {f.line} (first on line {first_hash[f.hash].line})",
                            seq=seq,
                            line=f.line,
                        )
                    )
                else:
                    first_hash[f.hash] = f
            hashes_at[seq] = set(first_hash)
            if len(first_hash) > 1:
                lines = ", ".join(str(x.line) for x in first_hash.values())
                for f in first_hash.values():
                    add(
                        Finding(
                            FindingCode.FORK,
                            f"{len(first_hash)} different records claim seq {seq} (lines {lines})",
                            seq=seq,
                            line=f.line,
                        )
                    )

        seqs = sorted(by_seq)
        expected = 0
        for s in seqs:
            if s > expected:
                add(
                    Finding(
                        FindingCode.GAP, _gap_text(expected, s - 1), seq=expected, missing=(expected, s - 1)
                    )
                )
            expected = s + 1
        for s in seqs:
            if s == 0 or not authentic_at.get(s - 1):
                continue  # nothing authentic to link to: the gap or the bad predecessor is already reported
            for f in by_seq[s]:
                if f.prev not in authentic_at[s - 1]:
                    add(
                        Finding(
                            FindingCode.BROKEN_LINK,
                            f"record {s} (line {f.line}) names {str(f.prev)[:19]}… as its predecessor, "
                            f"but record {s - 1} has another hash",
                            seq=s,
                            line=f.line,
                        )
                    )
        if expect_last is not None:
            want_seq, want_hash = expect_last
            if highest < want_seq:
                add(
                    Finding(
                        FindingCode.TRUNCATED,
                        f"the chain ends at record {highest}, but a witness saw record {want_seq}",
                        seq=highest + 1,
                        missing=(highest + 1, want_seq),
                    )
                )
            elif want_hash is not None and want_hash not in hashes_at.get(want_seq, set()):
                add(
                    Finding(
                        FindingCode.FORK,
                        f"record {want_seq} differs from the one the witness saw ({want_hash[:19]}…)",
                        seq=want_seq,
                    )
                )

    # -- stage 2: clocks and files ----------------------------------------------------------------

    def _check_clock(self, good: list[RecordFacts], add: Any) -> None:
        last: RecordFacts | None = None
        for f in sorted(good, key=lambda x: (x.seq, x.line)):
            if f.start is not None and f.end is not None and f.end < f.start:
                add(
                    Finding(
                        FindingCode.CLOCK_BACKWARDS,
                        f"record {f.seq} (line {f.line}): segment ends at {f.end}, before its start {f.start}",
                        seq=f.seq,
                        line=f.line,
                    )
                )
            if last is not None and f.time < last.time and not (last.kind == "clock" and last.clock_applied):
                add(
                    Finding(
                        FindingCode.CLOCK_BACKWARDS,
                        f"record {f.seq} (line {f.line}) is dated {f.time}, earlier than record {last.seq} "
                        f"({last.time}), with no clock correction between them",
                        seq=f.seq,
                        line=f.line,
                    )
                )
            last = f

    def _check_files(
        self,
        good: list[RecordFacts],
        media_dir: Path,
        media_files: set[str] | None,
        add: Any,
        released: set[tuple[int, str]],
    ) -> None:
        with_files = [f for f in good if f.file is not None]
        paths = {f.file: media_dir / f.file for f in with_files if f.file is not None}
        results = file_digests([p for p in paths.values() if p.is_file()], workers=self.workers)
        for f in with_files:
            assert f.file is not None
            where = f"record {f.seq} (line {f.line})"
            got = results.get(paths[f.file])
            if got is None and (f.seq, f.hash) in released:
                continue  # freed after the server acknowledged it; the release record names the ack
            if got is None:
                add(
                    Finding(
                        FindingCode.MISSING_FILE,
                        f"{where}: media file {f.file} is missing",
                        seq=f.seq,
                        line=f.line,
                    )
                )
            elif isinstance(got, OSError):
                add(
                    Finding(
                        FindingCode.MISSING_FILE,
                        f"{where}: media file {f.file} cannot be read ({got.strerror})",
                        seq=f.seq,
                        line=f.line,
                    )
                )
            else:
                digest, size = got
                if size != f.size:
                    add(
                        Finding(
                            FindingCode.SIZE_MISMATCH,
                            f"{where}: {f.file} has {size} bytes, the record signed {f.size}",
                            seq=f.seq,
                            line=f.line,
                        )
                    )
                if digest != f.digest:
                    add(
                        Finding(
                            FindingCode.HASH_MISMATCH,
                            f"{where}: {f.file} hashes to {digest[:19]}…, the record signed {str(f.digest)[:19]}…",
                            seq=f.seq,
                            line=f.line,
                        )
                    )
        if media_files is not None:
            for orphan in sorted(media_files - set(paths)):
                add(Finding(FindingCode.ORPHAN_FILE, f"media file {orphan} is not described by any record"))


def _gap_text(first: int, last: int) -> str:
    if first == last:
        return f"record {first} is missing from the chain"
    return f"records {first}–{last} ({last - first + 1}) are missing from the chain"
