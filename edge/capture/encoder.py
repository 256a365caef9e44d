"""The H.264 and AAC encoders, open for the whole capture session.

They run continuously, recording or not: the pre-event ring holds their *encoded* packets, and a
recording starts with those very packets. The encoders belong to a throwaway MP4 container (writing
to /dev/null) so that they are opened with the global headers MP4 needs; its streams are the
templates every segment's streams copy (codec parameters and extradata included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from edge.capture.audio_sources import FRAME_SAMPLES
from edge.capture.errors import CaptureError
from edge.config import AudioConfig, VideoConfig

AUDIO_KBPS_PER_CHANNEL = 64


@dataclass(slots=True)
class EncodedPacket:
    """An encoded packet, its kind and its time on the capture timeline."""

    packet: Any  # av.Packet; pts/dts/time_base in the encoder's units (video 1/fps, audio 1/rate)
    kind: str  # "v" or "a"
    t: float  # seconds since the first frame
    key: bool


# libx264 for real time on a small board, with a fixed GOP so that cuts fall regularly.
X264_OPTIONS = {
    "preset": "ultrafast",  # the preset a Pi-class CPU can sustain at 720p30
    "tune": "zerolatency",  # no lookahead, no B-frames: packets leave with their frame
    "sc_threshold": "0",  # no scene-cut keyframes: keyframes exactly every keyframe_interval_s
}


class Encoders:
    """H.264 (libx264 or the Pi's h264_v4l2m2m) and, when there is audio, AAC."""

    def __init__(self, video: VideoConfig, audio: AudioConfig) -> None:
        import av

        self.fps = video.fps
        self.rate = audio.rate
        self.channels = audio.channels
        self._holder = av.open(os.devnull, "w", format="mp4")
        try:
            options = dict(X264_OPTIONS) if video.encoder == "libx264" else {}
            vs = self._holder.add_stream(video.encoder, rate=video.fps, options=options)
            vs.width, vs.height, vs.pix_fmt = video.width, video.height, "yuv420p"
            vs.bit_rate = video.bitrate_kbps * 1000
            vs.codec_context.gop_size = video.fps * video.keyframe_interval_s
            self.video_template: Any = vs
            self.audio_template: Any = None
            if audio.source.type != "none":
                a = self._holder.add_stream("aac", rate=audio.rate)
                a.layout = "mono" if audio.channels == 1 else "stereo"
                a.bit_rate = AUDIO_KBPS_PER_CHANNEL * 1000 * audio.channels
                self.audio_template = a
            # Opens both encoders now, so the templates carry SPS/PPS and the AAC config from the start.
            self._holder.start_encoding()
        except (av.error.FFmpegError, ValueError) as exc:
            self._holder.close()
            hint = ""
            if video.encoder == "h264_v4l2m2m":
                hint = " (the hardware encoder needs the Pi's V4L2 M2M device, /dev/video11; or use libx264)"
            raise CaptureError(f"cannot open the {video.encoder} / AAC encoders: {exc}{hint}") from exc
        self._vtb = Fraction(1, video.fps)
        self._silence: bytes | None = None

    def video(self, frame: Any, slot: int, *, keyframe: bool = False) -> list[EncodedPacket]:
        """Encode the frame of timeline slot ``slot`` (a keyframe on request)."""
        import av

        frame.pts, frame.time_base = slot, self._vtb
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        return [
            EncodedPacket(p, "v", p.pts / self.fps, p.is_keyframe) for p in self.video_template.encode(frame)
        ]

    def audio(self, frame: Any | None) -> list[EncodedPacket]:
        """Encode an audio frame (None flushes the encoder's tail)."""
        if self.audio_template is None:
            return []
        return [EncodedPacket(p, "a", p.pts / self.rate, True) for p in self.audio_template.encode(frame)]

    def flush_video(self) -> list[EncodedPacket]:
        """What the video encoder still holds, at the end of the session."""
        return [
            EncodedPacket(p, "v", p.pts / self.fps, p.is_keyframe) for p in self.video_template.encode(None)
        ]

    def silence(self, pts: int) -> EncodedPacket:
        """A silent AAC frame at ``pts`` (samples), compatible with the audio template."""
        import av

        if self._silence is None:
            self._silence = _silent_aac(self.rate, self.channels)
        packet = av.Packet(self._silence)
        packet.pts = packet.dts = pts
        packet.duration = FRAME_SAMPLES
        packet.time_base = Fraction(1, self.rate)
        return EncodedPacket(packet, "a", pts / self.rate, True)

    def close(self) -> None:
        """Close the template container (the encoders with it)."""
        self._holder.close()


def _silent_aac(rate: int, channels: int) -> bytes:
    # A steady-state frame of digital silence from an encoder with the template's settings: same
    # profile, rate and channels, hence the same decoder configuration.
    import av
    import numpy as np

    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = rate, ("mono" if channels == 1 else "stereo"), "fltp"
    ctx.bit_rate = AUDIO_KBPS_PER_CHANNEL * 1000 * channels
    packets = []
    for i in range(4):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((channels, FRAME_SAMPLES), np.float32), format="fltp", layout=ctx.layout.name
        )
        frame.sample_rate, frame.pts = rate, i * FRAME_SAMPLES
        packets += ctx.encode(frame)
    return bytes(packets[-1])
