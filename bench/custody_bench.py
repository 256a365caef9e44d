"""Custody benchmarks, as ratios against baselines measured in the same run.

1. Verifying a chain of N records (default 100,000) with ChainVerifier, against a bare loop of N Ed25519
   verifications with `cryptography` over the same messages. Goal ≥ 0.8× the bare loop's rate.
   Reported for the default (all cores) and for one process.
2. Hashing files totalling SIZE (default 2 GB) with custody.digest.file_digests, against `sha256sum` on
   the same files, page cache warm for both. Goal ≥ 0.9× sha256sum's rate.

    .venv/bin/python bench/custody_bench.py [--records N] [--gigabytes G] [--repeat R]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from custody.canonical import fast_canonical
from custody.chain import ChainHead, ChainWriter
from custody.digest import Digest, file_digests, sha256_digest
from custody.signing import SIGNATURE_CONTEXT
from custody.timefmt import utc_timestamp
from custody.trust import KeyStatus, SigningKey
from custody.verify import ChainVerifier
from fieldproof.sample_chain import segment_body


class BenchSigner:
    algorithm = "ed25519"

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.key_id = sha256_digest(b"bench signing certificate")

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


def make_chain(n: int) -> tuple[list[bytes], BenchSigner]:
    signer = BenchSigner()
    writer = ChainWriter(device="REC-0001", signer=signer, head=ChainHead())
    t0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    lines = []
    for i in range(n):
        start = t0 + timedelta(seconds=10 * i)
        body = segment_body(
            recording="r" * 32,
            index=i,
            file=f"r/{i:06d}.mp4",
            digest=sha256_digest(i.to_bytes(8, "big")),
            size=12_000_000 + i,
            start=start,
            case="津人社监察〔2026〕17号",
            subject="91120116MA05JQ2X4C",
            matter="CF-02",
            proof="用人单位违反劳务派遣规定的现场情况",
        )
        sealed = writer.seal_next("segment", body, time=utc_timestamp(start + timedelta(seconds=10)))
        writer.commit(sealed)
        lines.append(sealed.line)
    return lines, signer


def bench_chain(n: int, repeat: int) -> None:
    print(f"building a chain of {n:,} signed segment records …", flush=True)
    lines, signer = make_chain(n)
    pub = signer.key.public_key()
    # The baseline's inputs: exactly the messages and signatures the verifier has to check.
    msgs = []
    for ln in lines:
        env = json.loads(ln)
        msgs.append(
            (SIGNATURE_CONTEXT + fast_canonical(env["record"]), base64.b64decode(env["sig"]["value"]))
        )
    now = datetime.now(UTC)
    keys = {
        Digest(signer.key_id): SigningKey(
            key_id=Digest(signer.key_id),
            device="REC-0001",
            status=KeyStatus.TRUSTED,
            detail="bench",
            public_key=pub.public_bytes_raw(),
            not_before=now - timedelta(days=3650),
            not_after=now + timedelta(days=3650),
            revoked_at=None,
        )
    }

    class _Trust:
        crl_notes: tuple[str, ...] = ()
        revocation_checked = True

    def bare() -> float:
        t = time.perf_counter()
        p = Ed25519PublicKey.from_public_bytes(pub.public_bytes_raw())
        for m, s in msgs:
            p.verify(s, m)
        return time.perf_counter() - t

    def chain(workers: int | None) -> float:
        v = ChainVerifier(_Trust(), workers=workers)  # type: ignore[arg-type]
        t = time.perf_counter()
        report = v.verify(device="REC-0001", lines=lines, keys=keys, media_dir=None)
        el = time.perf_counter() - t
        if not report.all_sound or len(report.records) != n:
            raise SystemExit(f"benchmark chain did not verify: {report.findings[:3]}")
        return el

    results: dict[str, list[float]] = {"bare": [], "chain": [], "chain-1proc": []}
    for _ in range(repeat):  # interleaved, so that machine noise hits every contender alike
        results["bare"].append(bare())
        results["chain"].append(chain(None))
        results["chain-1proc"].append(chain(1))
    b = statistics.median(results["bare"])
    for name in ("chain", "chain-1proc"):
        c = statistics.median(results[name])
        print(
            f"  {name:12s} {n / c:10,.0f} records/s   ratio vs bare Ed25519 loop ({n / b:,.0f}/s): {b / c:.2f}×"
        )
    print(f"  cores: {os.cpu_count()}; goal ≥ 0.80× (default verifier)")


def bench_hash(total_bytes: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fp-hash-bench-", dir=os.environ.get("BENCH_DIR")) as d:
        root = Path(d)
        block = os.urandom(16 << 20)
        per_file = 128 << 20
        files = []
        written = 0
        i = 0
        while written < total_bytes:
            p = root / f"seg{i:03d}.mp4"
            size = min(per_file, total_bytes - written)
            with open(p, "wb") as f:
                left = size
                while left:
                    chunk = block[: min(left, len(block))]
                    f.write(chunk)
                    left -= len(chunk)
            files.append(p)
            written += size
            i += 1
        print(
            f"hashing {written / 1e9:.2f} GB in {len(files)} files (page cache warm for both) …", flush=True
        )

        def ours() -> float:
            t = time.perf_counter()
            res = file_digests(files)
            el = time.perf_counter() - t
            assert all(not isinstance(v, OSError) for v in res.values())
            return el

        def coreutils() -> float:
            t = time.perf_counter()
            subprocess.run(["sha256sum", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - t

        coreutils()  # warm the page cache
        a, b = [], []
        for _ in range(repeat):
            b.append(coreutils())
            a.append(ours())
        ta, tb = statistics.median(a), statistics.median(b)
        print(f"  sha256sum     {written / tb / 1e6:8.0f} MB/s")
        print(
            f"  file_digests  {written / ta / 1e6:8.0f} MB/s   ratio vs sha256sum: {tb / ta:.2f}×  (goal ≥ 0.90×)"
        )
        # The same, one file at a time on one thread: what a single stream costs.
        from custody.digest import file_digest

        t = time.perf_counter()
        for p in files:
            file_digest(p)
        t1 = time.perf_counter() - t
        print(f"  file_digest ×1 thread {written / t1 / 1e6:6.0f} MB/s   ratio vs sha256sum: {tb / t1:.2f}×")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--gigabytes", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    bench_chain(args.records, args.repeat)
    if args.gigabytes > 0:
        bench_hash(int(args.gigabytes * 1e9), args.repeat)


if __name__ == "__main__":
    main()
