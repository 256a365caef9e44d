"""Fault-campaign fixtures: the dock tests' fleet (our CA, recorders and docks enrolled) and broker, reused;
and the campaign's size and fault counts, which the environment may raise (bench/sync_faults.py is bigger).

``FIELDPROOF_FAULTS_SIZE_MB`` (MiB of segments, default 300), ``FIELDPROOF_FAULTS_KILLS`` (kill -9 of each
of broker, ingest and dock, default 5), ``FIELDPROOF_FAULTS_CUTS`` (link cuts, default 1),
``FIELDPROOF_FAULTS_SEED`` (repeat a schedule; default: a fresh seed, printed).
"""

from __future__ import annotations

import os

import pytest

from tests.edge.dock.conftest import broker, fleet, start_broker  # noqa: F401 - the dock tests' fixtures, reused
from tests.faults.campaign import CampaignSettings


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


@pytest.fixture
def faults_settings() -> CampaignSettings:
    """The issue's minimum by default: ≥ 300 MiB, 5 kills of each kind, one link cut."""
    kills = _int("FIELDPROOF_FAULTS_KILLS", 5)
    seed = os.environ.get("FIELDPROOF_FAULTS_SEED", "").strip()
    return CampaignSettings(
        size_mib=_int("FIELDPROOF_FAULTS_SIZE_MB", 300),
        broker_kills=kills,
        ingest_kills=kills,
        dock_kills=kills,
        link_cuts=_int("FIELDPROOF_FAULTS_CUTS", 1),
        seed=int(seed) if seed else None,
        deadline_s=600.0,
    )
