"""The human report of a verification: what is sound, what is not, and what to do."""

from __future__ import annotations

from collections import Counter

from custody.findings import Severity
from custody.verify import ChainReport, seq_ranges


def _ranges_text(seqs: list[int]) -> str:
    parts = [f"{a}" if a == b else f"{a}–{b}" for a, b in seq_ranges(seqs)]
    return ", ".join(parts) if parts else "none"


def render_text(report: ChainReport) -> str:
    """A plain-text report a custodian can read and file."""
    total = len(report.records)
    sound = report.sound_seqs
    lines = [
        f"Chain of custody: device {report.device}",
        f"Source: {report.source}",
        f"Records: {total}; sound: {len(sound)}; with findings: {total - len(sound)}",
    ]
    if report.all_sound:
        lines.append(
            "Result: ALL SOUND — every record is signed by a trusted device, in order, with its media intact."
        )
        lines.extend(f"Note: {note}" for note in report.notes)
        return "\n".join(lines) + "\n"
    errors = [f for f in report.findings if f.severity is Severity.ERROR]
    lines.append(
        f"Result: FINDINGS — {len(errors)} error(s), {len(report.findings) - len(errors)} warning(s)"
    )
    lines.append(f"Sound records (seq): {_ranges_text(sound)}")
    counts = Counter(f.code for f in report.findings)
    lines.append("Summary: " + ", ".join(f"{code} ×{n}" for code, n in sorted(counts.items())))
    lines.append("")
    lines.append("Findings:")
    advised: set[str] = set()
    for f in report.findings:
        lines.append(f"  [{f.severity.upper()}] {f.code}: {f.message}")
    lines.append("")
    lines.append("What to do:")
    for f in report.findings:
        if f.code not in advised:
            advised.add(f.code)
            lines.append(f"  {f.code}: {f.advice}")
    for note in report.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"
