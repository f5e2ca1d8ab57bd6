"""Real, small MP4s from the inputs, so the code under test downloads and measures a true video."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import imageio_ffmpeg
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_OUTPUT_SECONDS = 600.0
AUDIO_RATE = 48_000

Layout = Literal["single", "meanwhile", "left_right", "right_left"]


class RenderError(Exception):
    """An input could not be read or ffmpeg failed; the message is shown as the task's error."""


def audio_seconds(data: bytes, name: str) -> float:
    """How long the recording plays, as a decoder plays it: every sample decoded and counted.

    This reads the bytes on its own (never with the pipeline's code), so a test sees any estimate
    of the pipeline's that differs from what the video, and so the charge, comes to. In an MP4-family
    file the track's declared length is kept where the decoder gives less than one frame more: that
    surplus is the encoder's padding, which the edit list tells players to drop.
    """
    played = Fraction(0)
    longest = Fraction(0)
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="replace") as container:
            if not container.streams.audio:
                raise RenderError(f"{name} could not be read as audio: it has no audio track")
            track = container.streams.audio[0]
            for packet in container.demux(track):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    continue  # a damaged frame is skipped, as players skip it
                for frame in frames:
                    length = Fraction(frame.samples, frame.sample_rate or track.sample_rate or 1)
                    played += length
                    longest = max(longest, length)
            iso_media = container.format.name.startswith("mov,mp4")
            declared = Fraction(track.duration) * track.time_base if track.duration and track.time_base else None
    except av.FFmpegError as exc:
        raise RenderError(f"{name} could not be read as audio: {exc}") from exc
    if played <= 0:
        raise RenderError(f"{name} could not be read as audio (no sound decodes from it)")
    if iso_media and declared is not None and declared < played <= declared + longest:
        played = declared
    return float(played)


def output_seconds(layout: Layout, lengths: Sequence[float]) -> float:
    """Together the longer track plays; one after the other the tracks add up."""
    if layout in ("left_right", "right_left"):
        return float(sum(lengths))
    return float(max(lengths))


def still_frame(data: bytes, name: str, target: Path) -> None:
    """Re-save the image as an upright RGB PNG so ffmpeg's image loop always accepts it."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            picture = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise RenderError(f"{name} could not be read as an image: {exc}") from exc
    picture.save(target, format="PNG")


@dataclass(frozen=True)
class RenderPlan:
    """One render: a still image or a looped video, and the audio tracks in playing order."""

    visual: Path
    visual_is_video: bool
    audio: tuple[Path, ...]
    layout: Layout
    seconds: float
    frame_rate: int
    height: int


def ffmpeg_command(plan: RenderPlan, output: Path) -> list[str]:
    height = max(2, plan.height - plan.height % 2)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if plan.visual_is_video:
        command += ["-stream_loop", "-1", "-i", str(plan.visual)]
    else:
        command += ["-loop", "1", "-framerate", str(plan.frame_rate), "-i", str(plan.visual)]
    for track in plan.audio:
        command += ["-i", str(track)]
    graph = [f"[0:v]scale=-2:{height},setsar=1,fps={plan.frame_rate},format=yuv420p[v]"]
    for index in range(1, len(plan.audio) + 1):
        graph.append(f"[{index}:a]aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo[a{index}]")
    if len(plan.audio) == 1:
        mixed = "a1"
    elif plan.layout == "meanwhile":
        graph.append("[a1][a2]amix=inputs=2:duration=longest:normalize=0[mixed]")
        mixed = "mixed"
    else:
        graph.append("[a1][a2]concat=n=2:v=0:a=1[mixed]")
        mixed = "mixed"
    # Exactly the output's length in samples; the MP4's edit list then declares that length, and
    # the AAC encoder's priming and padding stay outside it.
    samples = max(1, round(plan.seconds * AUDIO_RATE))
    graph.append(f"[{mixed}]apad,atrim=end_sample={samples}[a]")
    command += ["-filter_complex", ";".join(graph), "-map", "[v]", "-map", "[a]"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if not plan.visual_is_video:
        command += ["-tune", "stillimage"]
    command += ["-c:a", "aac", "-b:a", "96k", "-t", f"{plan.seconds:.6f}", "-movflags", "+faststart", str(output)]
    return command


def render(plan: RenderPlan, output: Path) -> bytes:
    """Run ffmpeg; returns the MP4's bytes."""
    timeout = 120.0 + 2.0 * plan.seconds
    try:
        finished = subprocess.run(ffmpeg_command(plan, output), capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RenderError(f"rendering took longer than {timeout:.0f} s") from exc
    except OSError as exc:
        raise RenderError(f"ffmpeg could not be started: {exc}") from exc
    if finished.returncode != 0:
        detail = finished.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise RenderError(f"rendering failed: {' / '.join(detail) or f'ffmpeg exit code {finished.returncode}'}")
    return output.read_bytes()
