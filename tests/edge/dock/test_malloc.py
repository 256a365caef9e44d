"""fieldproof.malloc: the dock's chunk buffers are reused, not faulted in again for every chunk.

Each case runs in a fresh interpreter (the thresholds are process-wide): a thread builds 1 MiB packets
the way the dock does (a header and a chunk copied into a new buffer), keeps a window of them alive and
frees them as they are "acknowledged", and counts the page faults it took once warm.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import collections, json, os, resource, sys, threading
    from fieldproof.malloc import keep_large_buffers

    took = keep_large_buffers() if sys.argv[1] == "keep" else None
    chunk = os.urandom(1 << 20)

    def window(rounds):
        live = collections.deque()
        for i in range(rounds):
            live.append(bytearray(b"header") + chunk)  # as paho builds a PUBLISH
            if len(live) > 32:
                live.popleft()  # acknowledged
            if i % 40 == 39:
                live.clear()  # a file's window drained
        return len(live)

    out = {"took": took}

    def run():
        window(100)  # warm
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        window(300)
        out["faults"] = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    t = threading.Thread(target=run)  # the dock's sync runs on a thread of its own
    t.start()
    t.join()
    print(json.dumps(out))
    """
)


def _probe(mode: str) -> tuple[bool | None, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True
    )
    out = json.loads(done.stdout)
    return out["took"], int(out["faults"])


def test_glibc_takes_the_thresholds_and_the_window_stops_faulting() -> None:
    _, faults_default = _probe("default")
    took, faults_kept = _probe("keep")
    assert took is True  # the test machines run glibc
    # 300 packets of 1 MiB: with the defaults, freed pages are given back and faulted in again (about
    # 50,000 faults measured); kept, a warm window reuses its memory.
    assert faults_default > 10_000
    assert faults_kept < faults_default // 20


def test_a_threshold_out_of_an_int_is_refused_before_the_c_library_sees_it() -> None:
    from fieldproof.malloc import keep_large_buffers

    # ctypes would silently wrap 2**40 to 0 (no large buffers from the heap at all): refused here.
    with pytest.raises(ValueError, match="threshold"):
        keep_large_buffers(mmap_threshold=1 << 40)
    with pytest.raises(ValueError, match="threshold"):
        keep_large_buffers(trim_threshold=-1)
