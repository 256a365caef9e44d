"""Pipelines started by a test are closed after it, whatever happened."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.capture.errors import CaptureError
from edge.capture.pipeline import CapturePipeline
from tests.edge.capture.helpers import FakeSink, make_pipeline


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Any]:
    """``pipeline(**kw)`` → (pipe, sink), working in tmp_path/work; closed at the end of the test."""
    made: list[CapturePipeline] = []

    def make(**kw: Any) -> tuple[CapturePipeline, FakeSink]:
        pipe, sink = make_pipeline(tmp_path / "work", **kw)
        made.append(pipe)
        return pipe, sink

    yield make
    for pipe in made:
        with contextlib.suppress(CaptureError):  # a test about errors has looked at them already
            pipe.close()
