"""``fieldproof verify BUNDLE``: checking an exported case bag offline, with only the fleet root.

What is checked (docs/export.md):

1. The BagIt manifests: every payload and tag file has its SHA-256, none is missing or unlisted, and
   the Payload-Oxum holds. This proves only that the bag is as its manifests say — anyone can rewrite
   manifests — so everything below is checked against signatures, never against the manifests.
2. The devices' signed journal lines (``data/records/<device>.jsonl``) with the same ``ChainVerifier``
   as a spool, trusting only the root given (``--ca``); the bag's CA chain, CRL and device certificates
   count only when they chain to it. A bag carries the case's records, not whole chains: gaps between
   them are expected and not reported (the server's verification report covers whole chains).
3. Each media file against the size and digest its signed record names.
4. The server-signing certificate chains to the root; each annotation's signature; the custody-log
   checkpoint's signature and every event's inclusion proof against it; each clip has a proven
   ``filed`` event for its record.
5. The report's claims per clip (case number, time, place, collector, proof, digest) against the
   signed records and annotations.

Only the standard library, ``cryptography`` and ``custody`` itself are used.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody.canonical import canonical, parse
from custody.digest import file_digest
from custody.errors import CustodyError, TrustError
from custody.findings import FindingCode
from custody.logproof import LogEntryError, SignedCheckpoint, verify_checkpoint, verify_entry
from custody.report import render_text
from custody.signing import key_id
from custody.trust import TrustStore, load_certificates
from custody.verify import ChainReport, ChainVerifier

BUNDLE_FORMAT: Final = "fieldproof-export/1"
ANNOTATION_CONTEXT: Final = b"fieldproof/annotation/v1\n"
ANNOTATION_TYPE: Final = "fieldproof/footage-annotation"
MANIFEST: Final = "manifest-sha256.txt"
TAGMANIFEST: Final = "tagmanifest-sha256.txt"


class BundleError(CustodyError):
    """The folder cannot be read as a Fieldproof export bag at all."""


@dataclass(frozen=True, slots=True)
class BundleFinding:
    """One problem with the bag, outside a device chain."""

    code: str
    message: str
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"code": self.code, "message": self.message, "path": self.path}


@dataclass
class BundleReport:
    """Everything verification found in a bag."""

    source: str
    case_number: str
    findings: list[BundleFinding]
    chains: dict[str, ChainReport]
    clips: int = 0
    events: int = 0
    annotations: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def all_sound(self) -> bool:
        """Nothing at all to report."""
        return not self.findings and all(r.all_sound for r in self.chains.values())

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` output."""
        return {
            "bundle": self.source,
            "case_number": self.case_number,
            "all_sound": self.all_sound,
            "clips": self.clips,
            "custody_events": self.events,
            "annotations": self.annotations,
            "findings": [f.to_json() for f in self.findings],
            "chains": {d: r.to_json() for d, r in sorted(self.chains.items())},
            "notes": self.notes,
        }


def is_bundle(path: Path) -> bool:
    """A BagIt bag (it has bagit.txt), rather than a spool."""
    return (path / "bagit.txt").is_file()


def _sha256(path: Path) -> str:
    return str(file_digest(path)[0]).removeprefix("sha256:")


def _safe(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and ".." not in parts and "" not in parts


def _check_manifest(root: Path, name: str, out: list[BundleFinding]) -> dict[str, str]:
    """Each listed file's hash; findings for mismatches and missing files. Returns path → hex listed."""
    listed: dict[str, str] = {}
    try:
        text = (root / name).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        out.append(BundleFinding("manifest-unreadable", f"{name} cannot be read: {exc}", name))
        return listed
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64:
            out.append(
                BundleFinding("manifest-unreadable", f"{name} line {n} is not '<sha256>  <path>'", name)
            )
            continue
        hexd, rel = parts[0].lower(), parts[1].strip()
        if not _safe(rel):
            out.append(BundleFinding("manifest-unreadable", f"{name} line {n} names an unsafe path", name))
            continue
        listed[rel] = hexd
        p = root / rel
        if not p.is_file():
            out.append(BundleFinding("missing-file", f"{rel} is listed in {name} but absent", rel))
        elif _sha256(p) != hexd:
            out.append(
                BundleFinding("manifest-mismatch", f"{rel} does not have the SHA-256 {name} lists", rel)
            )
    return listed


def _check_bag(root: Path, out: list[BundleFinding]) -> None:
    payload = _check_manifest(root, MANIFEST, out)
    present = {p.relative_to(root).as_posix() for p in (root / "data").rglob("*") if p.is_file()}
    for rel in sorted(present - set(payload)):
        out.append(BundleFinding("unlisted-file", f"{rel} is in the payload but not in {MANIFEST}", rel))
    if (root / TAGMANIFEST).is_file():
        _check_manifest(root, TAGMANIFEST, out)
    try:
        info = (root / "bag-info.txt").read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return
    for line in info.splitlines():
        if line.startswith("Payload-Oxum:"):
            want = line.split(":", 1)[1].strip()
            got = f"{sum((root / p).stat().st_size for p in present)}.{len(present)}"
            if want != got:
                out.append(BundleFinding("oxum-mismatch", f"Payload-Oxum says {want}, the payload is {got}"))


def _load_json(root: Path, rel: str, out: list[BundleFinding]) -> Any:
    try:
        return json.loads((root / rel).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        out.append(BundleFinding("unreadable", f"{rel} cannot be read as JSON: {exc}", rel))
        return None


def _is_ca_cert(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _chains_to_root(cert: x509.Certificate, trust: TrustStore) -> bool:
    for ca in trust.trusted_cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


#: The members of an annotation file, as the export writes them: only ``signed`` is under the signature,
#: so the others must agree with it or with the file's name — nothing unsigned may ride along.
_ANNOTATION_FILE_KEYS: Final = frozenset({"id", "signed", "signature", "key_id"})


def _check_annotation(item: Any, cert: x509.Certificate, stem: str) -> dict[str, Any]:
    """The signed annotation object, or ValueError saying why it does not verify. ``stem``: the file's
    name without ``.json``, which is the annotation's id (its order among the server's annotations)."""
    if not isinstance(item, dict) or not isinstance(item.get("signed"), str):
        raise ValueError("not an annotation file (signed, signature)")
    if set(item) != _ANNOTATION_FILE_KEYS:
        raise ValueError(
            f"an annotation file has exactly {sorted(_ANNOTATION_FILE_KEYS)}, not {sorted(item)}"
        )
    ann_id = item["id"]
    if type(ann_id) is not int or ann_id < 1 or str(ann_id) != stem:
        raise ValueError(f"its id {ann_id!r} is not the positive number its file is named by ({stem!r})")
    signed = item["signed"].encode("utf-8")
    try:
        raw = base64.b64decode(str(item.get("signature", "")).encode("ascii"), validate=True)
        obj = parse(signed)
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"not well-formed: {exc}") from None
    if not isinstance(obj, dict) or canonical(obj) != signed or obj.get("type") != ANNOTATION_TYPE:
        raise ValueError("the signed text is not a canonical footage annotation")
    if obj.get("key_id") != key_id(cert):
        raise ValueError("it names another key than the server-signing certificate in the bag")
    if item["key_id"] != obj["key_id"]:
        raise ValueError(f"its key_id {item['key_id']!r} is not the one it signed ({obj['key_id']})")
    pub = cert.public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise ValueError("the server-signing certificate holds no Ed25519 key")
    try:
        pub.verify(raw, ANNOTATION_CONTEXT + signed)
    except InvalidSignature:
        raise ValueError("the signature does not verify: the annotation was altered") from None
    return obj


def _verify_chains(
    root: Path, trust: TrustStore, certs: list[x509.Certificate], workers: int | None
) -> dict[str, ChainReport]:
    keys = trust.signing_keys(certs)
    chains: dict[str, ChainReport] = {}
    for journal in sorted((root / "data" / "records").glob("*.jsonl")):
        device = journal.stem
        with open(journal, "rb") as f:
            lines = f.readlines()
        report = ChainVerifier(trust, workers=workers).verify(
            device=device,
            lines=lines,
            keys=keys,
            media_dir=None,
            source=f"{root}/data/records/{journal.name}",
        )
        # A bag holds the case's records only: the seqs between them are elsewhere on purpose.
        report.findings = [f for f in report.findings if f.code is not FindingCode.GAP]
        report.notes.append("the bag carries this case's records only: gaps between them are not findings")
        chains[device] = report
    return chains


def _records(root: Path, chains: dict[str, ChainReport]) -> dict[tuple[str, int], dict[str, Any]]:
    """Sound records by (device, seq), as parsed objects with their hash."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for device, report in chains.items():
        sound = {(r.line, r.hash) for r in report.records if r.sound}
        with open(root / "data" / "records" / f"{device}.jsonl", "rb") as f:
            for n, line in enumerate(f.readlines(), 1):
                status = next((r for r in report.records if r.line == n), None)
                if status is None or (n, status.hash) not in sound:
                    continue
                rec = parse(line.rstrip(b"\n"))["record"]
                out[(device, rec["seq"])] = rec | {"hash": status.hash}
    return out


def _expected(
    rec: dict[str, Any], member: str, server: list[dict[str, Any]], device_anns: list[dict[str, Any]]
) -> Any:
    """The current value of ``member``: latest server annotation, else (case/subject) latest device one,
    else as captured — the rule of docs/case-file.md."""
    target = {"device": rec["device"], "seq": rec["seq"], "hash": rec["hash"]}
    for a in sorted(server, key=lambda a: a["_id"], reverse=True):
        if target in a["targets"] and member in a["set"]:
            return a["set"][member]
    if member in ("case", "subject"):
        for a in sorted(device_anns, key=lambda a: a["seq"], reverse=True):
            t = {"device": rec["device"], "seq": rec["seq"], "hash": rec["hash"]}
            if t in a["body"]["targets"] and member in a["body"]["set"]:
                return a["body"]["set"][member]
    return rec["body"][member]


def verify_bundle(path: Path, *, ca: Sequence[Path], workers: int | None = None) -> BundleReport:
    """Verify an export bag against the fleet root(s) ``ca``; BundleError/TrustError when it cannot run."""
    root = path
    text = (root / "bagit.txt").read_text("utf-8", errors="replace") if is_bundle(root) else ""
    if "BagIt-Version:" not in text:
        raise BundleError(f"{path} is not a BagIt bag (no bagit.txt declaring a BagIt-Version)")
    findings: list[BundleFinding] = []
    _check_bag(root, findings)
    report = _load_json(root, "data/report.json", findings)
    if not isinstance(report, dict) or report.get("format") != BUNDLE_FORMAT:
        findings.append(BundleFinding("unreadable", f"data/report.json does not declare {BUNDLE_FORMAT}"))
        return BundleReport(str(path), "", findings, {})
    certs_dir = root / "data" / "certs"
    crl = [certs_dir / "crl.pem"] if (certs_dir / "crl.pem").is_file() else []
    extra = [p for p in (certs_dir, certs_dir / "devices") if p.is_dir()]
    TrustStore.from_paths(ca=ca)  # the given root must be usable: else the verifier cannot run
    try:
        # The bag's chain, CRL and certificates are evidence like the rest: damage to them is a finding.
        trust = TrustStore.from_paths(ca=ca, crl=crl, certs=extra)
        certs = [c for p in extra for c in load_certificates(p)]
        trust.signing_keys([])  # resolve the CRL now
        for c in certs:
            # Every CA certificate the bag carries (the chain, a copy of the root) must be one that
            # chains to the given root: a damaged copy the verifier would not otherwise need is still
            # damaged evidence.
            if _is_ca_cert(c) and c not in trust.trusted_cas:
                raise TrustError(
                    f"the CA certificate {c.subject.rfc4514_string()} does not chain to the given root"
                )
    except TrustError as exc:
        findings.append(
            BundleFinding("untrusted-certificates", f"the bag's certificates or CRL: {exc}", "data/certs")
        )
        return BundleReport(str(path), "", findings, {})
    chains = _verify_chains(root, trust, certs, workers)
    records = _records(root, chains)
    device_anns = [r for r in records.values() if r["kind"] == "annotation"]

    # The server-signing certificate: annotations and checkpoints are its.
    server_cert: x509.Certificate | None = None
    try:
        found = load_certificates(certs_dir / "server-signing.pem")  # read whole: a bad byte is an error here
        server_cert = found[0] if len(found) == 1 else None
    except (OSError, TrustError):
        server_cert = None
    if server_cert is None:
        findings.append(
            BundleFinding("untrusted-server-key", "data/certs/server-signing.pem is missing or unreadable")
        )
    if server_cert is not None and not _chains_to_root(server_cert, trust):
        findings.append(
            BundleFinding(
                "untrusted-server-key", "the server-signing certificate does not chain to the given root"
            )
        )
        server_cert = None

    server_anns: list[dict[str, Any]] = []
    ann_files = sorted((root / "data" / "annotations").glob("*.json"))
    for p in ann_files:
        rel = p.relative_to(root).as_posix()
        item = _load_json(root, rel, findings)
        if server_cert is None or item is None:
            continue
        try:
            obj = _check_annotation(item, server_cert, p.stem)
        except ValueError as exc:
            findings.append(BundleFinding("bad-annotation", f"{rel}: {exc}", rel))
            continue
        server_anns.append(obj | {"_id": item.get("id")})

    proven: list[dict[str, Any]] = []
    checkpoint_json = _load_json(root, "data/custody-log/checkpoint.json", findings)
    entries = _load_json(root, "data/custody-log/events.json", findings)
    if server_cert is not None and checkpoint_json is not None:
        try:
            checkpoint = SignedCheckpoint.from_json(checkpoint_json)
            verify_checkpoint(checkpoint, server_cert)
        except LogEntryError as exc:
            findings.append(BundleFinding("bad-checkpoint", str(exc), "data/custody-log/checkpoint.json"))
        else:
            if report.get("checkpoint") != checkpoint_json:
                findings.append(BundleFinding("report-mismatch", "the report names another checkpoint"))
            for i, entry in enumerate(entries if isinstance(entries, list) else []):
                try:
                    proven.append(verify_entry(entry, checkpoint))
                except LogEntryError as exc:
                    findings.append(
                        BundleFinding(
                            "bad-log-entry", f"events.json[{i}]: {exc}", "data/custody-log/events.json"
                        )
                    )

    case_number = (
        str(report.get("case", {}).get("number", "")) if isinstance(report.get("case"), dict) else ""
    )
    raw_clips = report.get("clips")
    clips: list[Any] = raw_clips if isinstance(raw_clips, list) else []
    named_media: set[str] = set()
    for clip in clips:
        _check_clip(root, clip, records, server_anns, device_anns, proven, named_media, findings)
    texts = report.get("text_records")
    for t in texts if isinstance(texts, list) else []:
        _check_text_record(root, t, proven, findings)
    try:
        shown = (root / "data" / "report.txt").read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        shown = None
    if shown is not None and shown != render_report_text(report):
        findings.append(
            BundleFinding("report-mismatch", "data/report.txt does not say what data/report.json says")
        )
    media_root = root / "data" / "media"
    for p in sorted(media_root.rglob("*")) if media_root.is_dir() else []:
        rel = p.relative_to(root / "data").as_posix()
        if p.is_file() and rel not in named_media:
            findings.append(
                BundleFinding("unlisted-media", f"data/{rel} is named by no clip of the report", rel)
            )
    notes = [
        "Trust: only the root(s) given with --ca; the bag's certificates count only if they chain to it.",
        "The export itself is recorded by an 'exported' event logged after this bag was sealed; ask the "
        "server for its inclusion proof to show the export was logged.",
    ]
    return BundleReport(
        source=str(path),
        case_number=case_number,
        findings=findings,
        chains=chains,
        clips=len(clips),
        events=len(proven),
        annotations=len(server_anns),
        notes=notes,
    )


def _check_clip(
    root: Path,
    clip: Any,
    records: dict[tuple[str, int], dict[str, Any]],
    server_anns: list[dict[str, Any]],
    device_anns: list[dict[str, Any]],
    proven: list[dict[str, Any]],
    named_media: set[str],
    findings: list[BundleFinding],
) -> None:
    if not isinstance(clip, dict):
        findings.append(BundleFinding("report-mismatch", "a clip of the report is not an object"))
        return
    ref = f"{clip.get('device')}:{clip.get('seq')}"
    seq = clip.get("seq")
    rec = records.get((str(clip.get("device")), seq)) if isinstance(seq, int) else None
    if rec is None or rec["hash"] != clip.get("record_hash"):
        findings.append(
            BundleFinding("clip-without-record", f"clip {ref}: no sound signed record with its hash")
        )
        return
    body = rec["body"]
    file_rel = f"media/{rec['device']}/{body['file']}"
    named_media.add(file_rel)
    media = root / "data" / file_rel
    if clip.get("file") != file_rel:
        findings.append(BundleFinding("report-mismatch", f"clip {ref}: the report names another file"))
    if not media.is_file():
        findings.append(BundleFinding("missing-file", f"clip {ref}: data/{file_rel} is absent", file_rel))
    else:
        digest, size = file_digest(media)
        if size != body["size"] or digest != body["digest"]:
            findings.append(
                BundleFinding(
                    "media-altered",
                    f"clip {ref}: data/{file_rel} differs from what device {rec['device']} signed "
                    f"(size {size}, expected {body['size']}; or its SHA-256)",
                    file_rel,
                )
            )
    loc = body["location"]
    first = loc["fixes"][0] if loc["fix"] else None
    place = (
        {"lat_e7": first["lat_e7"], "lon_e7": first["lon_e7"]}
        if first
        else {"fix": False, "reason": loc["reason"]}
    )
    claims = {
        "sha256": body["digest"],
        "size": body["size"],
        "start": body["start"],
        "end": body["end"],
        "collector": body["officer"],
        "place": place,
        "case_number": _expected(rec, "case", server_anns, device_anns),
        "proof": _expected(rec, "proof", server_anns, device_anns),
    }
    for name, want in claims.items():
        if clip.get(name) != want:
            findings.append(
                BundleFinding(
                    "report-mismatch", f"clip {ref}: the report's {name} is not what the signed records say"
                )
            )
    filed = any(
        e["kind"] == "filed"
        and e["device"] == rec["device"]
        and e["seq"] == rec["seq"]
        and e["record_hash"] == rec["hash"]
        for e in proven
    )
    if not filed:
        findings.append(
            BundleFinding("not-in-custody-log", f"clip {ref}: no proven 'filed' custody event for its record")
        )


def _check_text_record(
    root: Path, t: Any, proven: list[dict[str, Any]], findings: list[BundleFinding]
) -> None:
    """A text record's bytes have the digest the server logged when it was filed (a proven event)."""
    if not isinstance(t, dict) or not isinstance(t.get("file"), str) or not _safe(t["file"]):
        findings.append(BundleFinding("report-mismatch", "a text record of the report is malformed"))
        return
    p = root / "data" / t["file"]
    if not p.is_file() or file_digest(p)[0] != t.get("sha256"):
        findings.append(
            BundleFinding("text-record-altered", f"data/{t['file']} does not have its SHA-256", t["file"])
        )
    filed = any(
        e["kind"] == "filed"
        and e["digest"] == t.get("sha256")
        and f'"target_id": "{t.get("id")}"' in e["detail"]
        for e in proven
    )
    if not filed:
        findings.append(
            BundleFinding(
                "not-in-custody-log", f"text record {t.get('id')}: no proven 'filed' event with its SHA-256"
            )
        )


def _place_text(place: dict[str, Any]) -> str:
    if "lat_e7" in place:
        return f"{place['lat_e7'] / 1e7:.6f}, {place['lon_e7'] / 1e7:.6f}"
    return f"no fix ({place.get('reason', '')})"


def render_report_text(report: dict[str, Any]) -> str:
    """``data/report.txt``: the human form of ``data/report.json`` (the verifier re-renders and compares)."""
    case = report.get("case", {})
    checkpoint = report.get("checkpoint", {})
    lines = [
        f"Fieldproof export of case {case.get('number', '')}",
        f"Title: {case.get('title', '')}",
        f"Exported: {report.get('exported_at', '')} by {report.get('exported_by', '')}",
        f"Custody log checkpoint: size {checkpoint.get('tree_size')}, root {checkpoint.get('root_hash')}",
        f"Clips: {len(report.get('clips', []))}; text records: {len(report.get('text_records', []))}",
        "",
    ]
    for c in report.get("clips", []):
        who = c.get("collector", "") + (f" {c['collector_name']}" if c.get("collector_name") else "")
        lines += [
            f"{c.get('device')}:{c.get('seq')}  {c.get('file')}",
            f"  case number (案件编号): {c.get('case_number')}",
            f"  time (Asia/Shanghai):  {c.get('start_local')} – {c.get('end_local')}",
            f"  place (WGS-84):        {_place_text(c.get('place', {}))}",
            f"  collector (采集人):    {who}",
            f"  proof (证明对象):      {c.get('proof')}",
            f"  sha256:                {c.get('sha256')}",
            "",
        ]
    for t in report.get("text_records", []):
        lines.append(f"text record {t.get('id')}: {t.get('title')} ({t.get('file')}, {t.get('sha256')})")
    lines.append("")
    lines.append(
        "Check offline: fieldproof verify THIS-BAG --ca root-ca.pem (the fleet root, from the bureau)."
    )
    return "\n".join(lines) + "\n"


def render_bundle_text(report: BundleReport) -> str:
    """The human report of a bag's verification."""
    lines = [
        f"Export bundle: {report.source}",
        f"Case: {report.case_number}",
        f"Clips: {report.clips}; custody events proven: {report.events}; annotations verified: {report.annotations}",
    ]
    if report.all_sound:
        lines.append(
            "Result: ALL SOUND — manifests, signatures, media, annotations, custody-log proofs and the report agree."
        )
    else:
        n = len(report.findings) + sum(len(r.findings) for r in report.chains.values())
        lines.append(f"Result: FINDINGS — {n}")
        for f in report.findings:
            lines.append(f"  [{f.code}] {f.message}")
    for chain in report.chains.values():
        lines.append("")
        lines.append(render_text(chain).rstrip("\n"))
    lines.append("")
    lines.extend(f"Note: {n}" for n in report.notes)
    return "\n".join(lines) + "\n"


__all__ = [
    "BundleError",
    "BundleFinding",
    "BundleReport",
    "TrustError",
    "is_bundle",
    "render_bundle_text",
    "render_report_text",
    "verify_bundle",
]
