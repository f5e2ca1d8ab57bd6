"""Side-by-side figures for the two media paths that must not grow with the file.

1. Delivery: an output video streamed from WaveSpeed into S3 (the fetch function's path) against
   downloading it whole and putting it in one call. Peak Python memory is measured with tracemalloc.
2. Measuring input audio: decoding the recording to its end through capped ranged GETs (the submit
   function's path) against downloading it whole first. Bytes fetched, GETs and peak memory are shown:
   both fetch the whole sound, but the ranged path holds at most a few blocks and skips ID3 tags.

AWS is moto's server in its own process (so its memory is not counted), on 127.0.0.1.
Run with ``make bench``; it prints a table and changes nothing outside its temporary server.
"""

from __future__ import annotations

import argparse
import io
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import av
import boto3
import httpx
from av.audio.stream import AudioStream

from infinitetalk_core.delivery import store_outputs
from infinitetalk_core.media import READ_CAP_BYTES, MediaFacts, check_media, measure_audio
from infinitetalk_core.models import MediaKind
from infinitetalk_core.outbound import OutputDownloader, OutputPolicy
from infinitetalk_core.pipeline import Pipeline
from infinitetalk_core.storage import MediaBucket, StoredObject
from infinitetalk_core.wavespeed import Prediction
from infinitetalk_core.wavespeed_client import WaveSpeedClient
from local_stack.samples import voice_wav

MIB = 1024 * 1024
BUCKET = "bench-media"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def video_server() -> Iterator[str]:
    """Serves ``/<n>`` as n MiB of bytes, written from one reused buffer."""
    chunk = bytes(range(256)) * 4096

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            size = int(self.path.strip("/")) * MIB
            self.send_response(200)
            self.send_header("content-type", "video/mp4")
            self.send_header("content-length", str(size))
            self.end_headers()
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def measured(action: Callable[[], object]) -> tuple[float, float]:
    """Seconds taken and peak traced memory in MiB."""
    tracemalloc.start()
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak / MIB


def bench_delivery(s3: Any, videos: str, sizes: list[int]) -> None:
    http = httpx.Client(timeout=60)
    bucket = MediaBucket(s3, BUCKET)
    # The fetch function's own download path, allowed to reach exactly this loopback video server.
    outputs = OutputDownloader.build(OutputPolicy.parse(videos, max_bytes=max(sizes) * MIB), httpx.Timeout(60))
    wavespeed = WaveSpeedClient("http://unused", lambda: "", http, outputs=outputs)
    pipeline = cast(Pipeline, SimpleNamespace(bucket=bucket, wavespeed=wavespeed))
    print("\nDelivering an output video into S3 (peak Python memory, MiB)")
    print(f"{'size':>8} {'streamed s':>11} {'streamed MiB':>13} {'whole s':>9} {'whole MiB':>10} {'memory ratio':>13}")
    for size in sizes:
        prediction = Prediction(id=f"{size:032x}", status="completed", outputs=[f"{videos}/{size}"])
        folder = f"outputs/bench-{size}/"
        streamed_s, streamed_mib = measured(lambda: store_outputs(folder, prediction, pipeline))  # noqa: B023

        def whole(size: int = size) -> None:
            body = http.get(f"{videos}/{size}").content
            s3.put_object(Bucket=BUCKET, Key=f"whole/{size}.mp4", Body=body)

        whole_s, whole_mib = measured(whole)
        print(
            f"{size:>5} MiB {streamed_s:>11.2f} {streamed_mib:>13.1f} {whole_s:>9.2f} {whole_mib:>10.1f}"
            f" {whole_mib / streamed_mib:>12.1f}x"
        )


@dataclass(frozen=True)
class Recording:
    label: str
    filename: str
    data: bytes


def recordings(minutes: list[int]) -> list[Recording]:
    """Speech-like WAVs of the given lengths, a 48 kHz stereo WAV near the 50 MB limit, and an MP3
    carrying a 40 MiB ID3 tag (as cover art would), which a header reader once fetched in one GET."""
    found = [Recording(f"{length} min WAV", "audio.wav", voice_wav(length * 60.0)) for length in minutes]
    rate, seconds = 48_000, 240
    frames = bytes(4 * rate * seconds)
    wav = b"RIFF" + struct.pack("<I", 36 + len(frames)) + b"WAVE"
    wav += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, rate, 4 * rate, 4, 16) + b"data" + struct.pack("<I", len(frames))
    found.append(Recording("4 min 48k WAV", "audio.wav", wav + frames))
    found.append(Recording("1 min MP3+tag", "audio.mp3", tagged_mp3(60.0, 40 * MIB)))
    return found


def tagged_mp3(seconds: float, tag_bytes: int) -> bytes:
    source = io.BytesIO(voice_wav(seconds))
    target = io.BytesIO()
    with av.open(source, mode="r") as inp, av.open(target, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=44_100)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        resampler = av.AudioResampler(format="s16p", layout="mono", rate=44_100, frame_size=1152)
        for frame in inp.decode(audio=0):
            for resampled in resampler.resample(frame):
                out.mux(stream.encode(resampled))
        out.mux(stream.encode(None))
    payload = b"cover\x00" + bytes(tag_bytes)
    body = b"PRIV" + struct.pack(">I", len(payload)) + b"\x00\x00" + payload
    size = len(body)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x03\x00\x00" + syncsafe + body + target.getvalue()


def bench_audio_probe(s3: Any, minutes: list[int]) -> None:
    """The submit path decodes every recording to its end through capped ranged GETs; against it,
    downloading the file whole and decoding it from memory. Bytes fetched, GETs and peak memory."""
    gets: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        gets.append(int(parsed.get("ContentLength", 0)))

    s3.meta.events.register("after-call.s3.GetObject", count)
    bucket = MediaBucket(s3, BUCKET)
    print("\nMeasuring an input recording's length by decoding it (bytes fetched from S3, peak Python memory)")
    print(
        f"{'recording':>14} {'file MiB':>9} | {'ranged MiB':>10} {'GETs':>5} {'largest KiB':>11} {'peak MiB':>8}"
        f" {'s':>6} | {'whole MiB':>9} {'peak MiB':>8} {'s':>6} | length"
    )
    for recording in recordings(minutes):
        key = f"inputs/{recording.label.replace(' ', '-')}/{recording.filename}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=recording.data)
        stored = bucket.head(key)
        assert stored is not None
        gets.clear()
        facts: list[MediaFacts] = []

        def ranged(stored: StoredObject = stored, facts: list[MediaFacts] = facts) -> None:
            with bucket.open(stored) as stream:
                facts.append(check_media(stream, stored.filename, MediaKind.AUDIO, stored.size))

        ranged_s, ranged_mib = measured(ranged)
        ranged_gets = list(gets)
        gets.clear()
        whole: list[Decimal] = []

        def downloaded(key: str = key, name: str = stored.filename, whole: list[Decimal] = whole) -> None:
            data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            whole.append(measure_audio(io.BytesIO(data), name).seconds)

        whole_s, whole_mib = measured(downloaded)
        assert facts[0].seconds == whole[0], (facts[0].seconds, whole[0])
        print(
            f"{recording.label:>14} {stored.size / MIB:>9.1f} | {sum(ranged_gets) / MIB:>10.2f} {len(ranged_gets):>5}"
            f" {max(ranged_gets) / 1024:>11.0f} {ranged_mib:>8.1f} {ranged_s:>6.2f} | {sum(gets) / MIB:>9.2f}"
            f" {whole_mib:>8.1f} {whole_s:>6.2f} | {facts[0].seconds} s"
        )
    print(
        f"(no GET larger than {READ_CAP_BYTES // MIB} MiB; an ID3 tag in front of the sound is never fetched; "
        "tracemalloc sees Python's memory, not FFmpeg's)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256], help="output sizes in MiB")
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 5, 10], help="input recording lengths")
    args = parser.parse_args()
    with moto_server() as endpoint, video_server() as videos:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's placeholder credentials
        )
        s3.create_bucket(Bucket=BUCKET)
        bench_delivery(s3, videos, args.sizes)
        bench_audio_probe(s3, args.minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
