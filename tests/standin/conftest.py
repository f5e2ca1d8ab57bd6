"""One stand-in for the whole module, a file server for its inputs and a webhook receiver per test."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import tempfile
import threading
import time
import uuid
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import imageio_ffmpeg
import pytest
from PIL import Image

from wavespeed_standin import WaveSpeedStandin

API_KEY = "test-standin-api-key"
SECRET = "whsec_test-secret-for-standin"


def portrait_png(width: int = 320, height: int = 400) -> bytes:
    picture = Image.new("RGB", (width, height), (180, 140, 110))
    for x in range(width // 4, 3 * width // 4):
        for y in range(height // 5, height // 2):
            picture.putpixel((x, y), (90, 60, 40))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def tone_wav(seconds: float, rate: int = 8000, frequency: float = 220.0) -> bytes:
    frames = round(seconds * rate)
    samples = b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * frequency * n / rate))) for n in range(frames)
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples)
    return buffer.getvalue()


def pattern_mp4(seconds: float) -> bytes:
    """A short silent H.264 clip, the input of the video-to-video model."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "clip.mp4"
        subprocess.run(
            [
                imageio_ffmpeg.get_ffmpeg_exe(),
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"testsrc=size=160x120:rate=10:duration={seconds}",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                str(target),
            ],
            check=True,
            capture_output=True,
        )
        return target.read_bytes()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""


class FileServer:
    """Serves generated inputs on 127.0.0.1, like presigned S3 URLs would."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        owner = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                found = owner.files.get(self.path.split("?", 1)[0])
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", found[0])
                self.send_header("Content-Length", str(len(found[1])))
                self.end_headers()
                self.wfile.write(found[1])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, name: str, content_type: str, content: bytes) -> str:
        path = f"/{uuid.uuid4().hex}/{name}"
        self.files[path] = (content_type, content)
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}?X-Amz-Signature=abc"

    def missing(self, name: str) -> str:
        """A URL on this server that answers 404."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/{uuid.uuid4().hex}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps every delivery's raw bytes."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self._changed = threading.Condition()
        owner = self

        class Handler(_Quiet):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with owner._changed:
                    owner.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    owner._changed.notify_all()
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, job: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/wavespeed?job={job}"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"expected {count} webhook deliveries, got {len(self.received)}")
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def standin_log() -> list[str]:
    return []


@pytest.fixture(scope="session")
def standin(standin_log: list[str]) -> Iterator[WaveSpeedStandin]:
    with WaveSpeedStandin(
        api_key=API_KEY, webhook_secret=SECRET, min_processing_seconds=0.1, log=standin_log.append
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_faults(standin: WaveSpeedStandin) -> Iterator[None]:
    standin.reset_faults()
    yield
    standin.reset_faults()
    assert standin.wait_idle(60), "a test left tasks or webhooks running"


@pytest.fixture(scope="session")
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def api(standin: WaveSpeedStandin) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=standin.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30, trust_env=False
    ) as client:
        yield client


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the ISO-BMFF boxes in data[start:end]."""
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[start + 8 : start + 16])
            header = 16
        elif size == 0:
            size = end - start
        if size < header:
            raise AssertionError(f"corrupt MP4 box {kind!r} at {start}")
        yield kind, start + header, start + size
        start += size


def _child(data: bytes, start: int, end: int, *path: bytes) -> tuple[int, int]:
    for name in path:
        start, end = next((s, e) for kind, s, e in _boxes(data, start, end) if kind == name)
    return start, end


def mp4_tracks(video: bytes) -> dict[str, tuple[str, int, int]]:
    """Handler type -> (sample entry fourcc, width, height), read from the MP4's boxes."""
    moov = _child(video, 0, len(video), b"moov")
    tracks: dict[str, tuple[str, int, int]] = {}
    for kind, start, end in _boxes(video, *moov):
        if kind != b"trak":
            continue
        hdlr, _ = _child(video, start, end, b"mdia", b"hdlr")
        stsd, _ = _child(video, start, end, b"mdia", b"minf", b"stbl", b"stsd")
        width, height = struct.unpack(">HH", video[stsd + 40 : stsd + 44])
        tracks[video[hdlr + 8 : hdlr + 12].decode()] = (video[stsd + 12 : stsd + 16].decode(), width, height)
    return tracks


def mp4_seconds(video: bytes) -> float:
    """What players play: the sound track's length as the MP4's edit list declares it (the AAC
    encoder's priming and padding outside it)."""
    with av.open(io.BytesIO(video), mode="r") as parsed:
        assert parsed.format.name.startswith("mov,mp4"), "not an MP4"
        track = parsed.streams.audio[0]
        assert track.duration is not None and track.time_base is not None
        return float(track.duration * track.time_base)


def wait_final(api: httpx.Client, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data: dict[str, Any] = api.get(f"/predictions/{task_id}/result").json()["data"]
        if data["status"] in ("completed", "failed"):
            return data
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish in {timeout} s")
