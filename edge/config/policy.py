"""The recording policy (音像记录事项清单): scenes, whether each needs full recording, and the markers."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    StrictStr,
    model_validator,
)

from edge.config.base import (
    ChineseText,
    Code,
    _Config,
    _duplicates,
)

# -- recording policy --------------------------------------------------------------------------


class Marker(_Config):
    """A moment an inspector marks on the recording (出示执法证件, 告知权利义务…)."""

    code: Code
    label: ChineseText
    # 执法行为用语指引: what the recorder shows the inspector when prompting for this marker.
    prompt: StrictStr = Field(min_length=1, max_length=500)


class Scene(_Config):
    """A kind of enforcement activity and how it must be recorded."""

    code: Code
    name: ChineseText
    # full: 全程音像记录 required; stages: 根据实际情况对相关环节进行音像记录;
    # optional: a written record suffices (可不进行音像记录).
    recording: Literal["full", "stages", "optional"]
    basis: StrictStr = Field(min_length=1, max_length=500)
    # Suggested 证明对象 text, pre-filled for the inspector to complete.
    proof_hint: StrictStr = Field(default="", max_length=200)
    markers: tuple[Code, ...] = ()
    required_markers: tuple[Code, ...] = ()

    @model_validator(mode="after")
    def _required_are_prompted(self) -> Scene:
        problems = [f"markers lists {c!r} more than once" for c in _duplicates(self.markers)]
        problems += [
            f"required_markers lists {c!r} more than once" for c in _duplicates(self.required_markers)
        ]
        missing = [c for c in self.required_markers if c not in self.markers]
        if missing:
            problems.append(f"required_markers {', '.join(map(repr, missing))} not in this scene's markers")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RecordingPolicy(_Config):
    """The 音像记录事项清单: which scenes need full recording and which markers are prompted."""

    version: Literal[1]
    title: StrictStr = Field(min_length=1, max_length=200)
    source: StrictStr = Field(min_length=1, max_length=500)
    markers: tuple[Marker, ...] = Field(min_length=1)
    scenes: tuple[Scene, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross_references(self) -> RecordingPolicy:
        marker_codes = [m.code for m in self.markers]
        problems = [f"marker code {c!r} is defined more than once" for c in _duplicates(marker_codes)]
        problems += [
            f"scene code {c!r} is defined more than once" for c in _duplicates(s.code for s in self.scenes)
        ]
        problems += [
            f"scene {scene.code!r} lists marker {code!r}, which is not in the [[markers]] list"
            for scene in self.scenes
            for code in scene.markers
            if code not in marker_codes
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def scene(self, code: str) -> Scene:
        """The scene with this code; KeyError if the policy has none."""
        for scene in self.scenes:
            if scene.code == code:
                return scene
        raise KeyError(code)

    def marker(self, code: str) -> Marker:
        """The marker with this code; KeyError if the catalogue has none."""
        for marker in self.markers:
            if marker.code == code:
                return marker
        raise KeyError(code)
