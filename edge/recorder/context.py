"""What the inspector says about a recording: 执法证号, case, subject, matter, scene, proof statement.

Values are checked when they are set — an unknown matter code or scene is refused at the button, not
discovered by the server weeks later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from custody.matters import is_known_matter
from edge.config import RecordingPolicy
from edge.recorder.errors import RecorderError

FIELDS = ("officer", "case", "subject", "matter", "scene", "proof")
_LIMITS = {"officer": 64, "case": 128, "subject": 128, "matter": 16, "scene": 64, "proof": 2000}


@dataclass(frozen=True, slots=True)
class RecordingContext:
    """The context stamped into each segment record (the custody record's context members)."""

    officer: str = ""
    case: str = ""
    subject: str = ""
    matter: str = ""
    scene: str = ""
    proof: str = ""

    def updated(self, policy: RecordingPolicy | None, **changes: str) -> RecordingContext:
        """A copy with ``changes`` applied, or RecorderError naming what is wrong."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise RecorderError(f"unknown field(s) {', '.join(unknown)}; settable: {', '.join(FIELDS)}")
        for key, value in changes.items():
            if not isinstance(value, str):
                raise RecorderError(f"{key} must be text")
            if len(value) > _LIMITS[key]:
                raise RecorderError(f"{key} is longer than {_LIMITS[key]} characters")
        matter = changes.get("matter")
        if matter and not is_known_matter(matter):
            raise RecorderError(
                f"matter {matter!r} is not in the enforcement-matter catalogue (e.g. CF-02, JC-01)"
            )
        scene = changes.get("scene")
        if scene and policy is not None and scene not in {s.code for s in policy.scenes}:
            codes = ", ".join(s.code for s in policy.scenes)
            raise RecorderError(f"scene {scene!r} is not in the recording policy; known scenes: {codes}")
        return replace(self, **changes)

    def as_record(self) -> dict[str, Any]:
        """The members as the segment record holds them."""
        return asdict(self)
