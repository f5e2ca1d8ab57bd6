"""Real, small MP4s from the inputs, so the code under test downloads and measures a true video."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import imageio_ffmpeg
import mutagen
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_OUTPUT_SECONDS = 600.0
AUDIO_RATE = 48_000
# ffmpeg's AAC encoder puts 1024 priming samples in front; mutagen counts them in the track
# length, so the audio is cut that much short to make the output read exactly the input's length.
AAC_PRIMING_SAMPLES = 1024

Layout = Literal["single", "meanwhile", "left_right", "right_left"]


class RenderError(Exception):
    """An input could not be read or ffmpeg failed; the message is shown as the task's error."""


def audio_seconds(data: bytes, name: str) -> float:
    """Playing time as mutagen reads it: the same reader the pipeline uses for its estimate."""
    try:
        parsed = mutagen.File(io.BytesIO(data))
    except Exception as exc:
        raise RenderError(f"{name} could not be read as audio: {exc}") from exc
    length = float(getattr(getattr(parsed, "info", None), "length", 0.0) or 0.0)
    if parsed is None or length <= 0:
        raise RenderError(f"{name} could not be read as audio (unrecognised format or no sound)")
    return length


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
    samples = max(1, round(plan.seconds * AUDIO_RATE) - AAC_PRIMING_SAMPLES)
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
