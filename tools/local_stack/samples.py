"""Sample inputs made at run time: portraits, voice-like recordings and a short video.

Nothing is downloaded and no binary media is committed; every file is made from a few lines
of code, so tests can ask for exactly the length they need.
"""

from __future__ import annotations

import io
import math
import subprocess
import tempfile
import wave
from array import array
from pathlib import Path

from PIL import Image, ImageDraw

SAMPLE_RATE = 8_000
_SKIN = [(241, 194, 160), (198, 134, 96)]
_HAIR = [(60, 40, 30), (20, 20, 25)]
_SHIRT = [(40, 90, 160), (150, 50, 60)]


def _draw_person(draw: ImageDraw.ImageDraw, cx: int, top: int, scale: float, look: int) -> None:
    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        return (int(cx + x0 * scale), int(top + y0 * scale), int(cx + x1 * scale), int(top + y1 * scale))

    draw.ellipse(box(-150, 300, 150, 560), fill=_SHIRT[look])  # shoulders
    draw.rectangle(box(-35, 230, 35, 320), fill=_SKIN[look])  # neck
    draw.ellipse(box(-95, 20, 95, 150), fill=_HAIR[look])  # hair
    draw.ellipse(box(-85, 40, 85, 260), fill=_SKIN[look])  # face
    for side in (-1, 1):
        draw.ellipse(box(side * 35 - 14, 115, side * 35 + 14, 135), fill=(255, 255, 255))
        draw.ellipse(box(side * 35 - 6, 118, side * 35 + 6, 132), fill=(40, 30, 30))
        draw.line(box(side * 35 - 18, 102, side * 35 + 18, 98), fill=_HAIR[look], width=max(1, int(5 * scale)))
    nose = [(cx + x * scale, top + y * scale) for x, y in ((0, 140), (-10, 180), (10, 180))]
    draw.polygon(nose, fill=(210, 150, 120))
    draw.chord(box(-35, 190, 35, 225), start=0, end=180, fill=(170, 60, 70))


def portrait_png(people: int = 1, width: int = 512, height: int = 512, image_format: str = "PNG") -> bytes:
    """A drawn head-and-shoulders portrait of one or two people."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        shade = int(200 - 80 * y / height)
        draw.line([(0, y), (width, y)], fill=(shade, shade + 20, min(255, shade + 45)))
    scale = min(width / (520 * people), height / 560)
    for index in range(people):
        cx = int(width * (index + 0.5) / people)
        _draw_person(draw, cx, int(height - 560 * scale), scale, index % 2)
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


def _syllables(seconds: float, pitch: float) -> array[int]:
    """Voiced bursts with a moving pitch and short pauses: speech-like enough for a lip-sync model."""
    samples = array("h")
    total = int(seconds * SAMPLE_RATE)
    syllable = int(0.22 * SAMPLE_RATE)
    gap = int(0.08 * SAMPLE_RATE)
    index = 0
    while len(samples) < total:
        f0 = pitch * (1 + 0.15 * math.sin(index * 1.7))
        for n in range(syllable):
            envelope = math.sin(math.pi * n / syllable)
            t = n / SAMPLE_RATE
            value = sum(math.sin(2 * math.pi * f0 * h * t) / h for h in (1, 2, 3, 4))
            samples.append(int(9_000 * envelope * value / 2))
        samples.extend([0] * gap)
        index += 1
    return samples[:total]


def voice_wav(seconds: float, pitch: float = 140.0) -> bytes:
    """A mono 8 kHz WAV of exactly ``seconds``; long recordings repeat a two-second phrase."""
    phrase = _syllables(min(seconds, 2.0), pitch)
    total = round(seconds * SAMPLE_RATE)
    frames = phrase.tobytes() * (total // len(phrase)) + phrase[: total % len(phrase)].tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(frames)
    return out.getvalue()


def portrait_mp4(seconds: float = 2.0) -> bytes:
    """A short H.264 video of the portrait, for video-to-video jobs (ffmpeg from imageio-ffmpeg)."""
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "portrait.png"
        image.write_bytes(portrait_png(width=320, height=320))
        target = Path(folder) / "clip.mp4"
        subprocess.run(
            [
                imageio_ffmpeg.get_ffmpeg_exe(),
                "-loglevel",
                "error",
                "-y",
                "-loop",
                "1",
                "-i",
                str(image),
                "-t",
                f"{seconds:.3f}",
                "-r",
                "5",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                str(target),
            ],
            check=True,
            timeout=120,
        )
        return target.read_bytes()
