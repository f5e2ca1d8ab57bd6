"""Side-by-side figures for the two media paths that must not grow with the file.

1. Delivery: an output video streamed from WaveSpeed into S3 (the fetch function's path) against
   downloading it whole and putting it in one call. Peak Python memory is measured with tracemalloc.
2. Measuring input audio: ranged reads of the headers (the submit function's path) against
   downloading the recording. Bytes fetched from S3 are counted.

AWS is moto's server in its own process (so its memory is not counted), on 127.0.0.1.
Run with ``make bench``; it prints a table and changes nothing outside its temporary server.
"""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import boto3
import httpx

from infinitetalk_core.delivery import store_outputs
from infinitetalk_core.media import playing_seconds
from infinitetalk_core.outbound import OutputDownloader, OutputPolicy
from infinitetalk_core.pipeline import Pipeline
from infinitetalk_core.storage import MediaBucket
from infinitetalk_core.wavespeed import Prediction, WaveSpeedClient
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


def bench_audio_probe(s3: Any, minutes: list[int]) -> None:
    fetched = [0]

    def count(parsed: dict[str, Any], **_: Any) -> None:
        fetched[0] += int(parsed.get("ContentLength", 0))

    s3.meta.events.register("after-call.s3.GetObject", count)
    bucket = MediaBucket(s3, BUCKET)
    print("\nMeasuring an input recording's length (bytes fetched from S3)")
    print(
        f"{'audio':>8} {'file MiB':>9} {'ranged KiB':>11} {'ranged s':>9}"
        f" {'whole KiB':>10} {'whole s':>8} {'bytes ratio':>12}"
    )
    for length in minutes:
        key = f"inputs/{length}min.wav"
        s3.put_object(Bucket=BUCKET, Key=key, Body=voice_wav(length * 60.0))
        stored = bucket.head(key)
        assert stored is not None
        fetched[0] = 0
        started = time.perf_counter()
        with bucket.open(stored) as stream:
            ranged_seconds = playing_seconds(stream, stored.filename)
        ranged_s, ranged_bytes = time.perf_counter() - started, fetched[0]
        fetched[0] = 0
        started = time.perf_counter()
        whole_seconds = playing_seconds(io.BytesIO(bucket.open_stream(key).read()), stored.filename)
        whole_s, whole_bytes = time.perf_counter() - started, fetched[0]
        assert ranged_seconds == whole_seconds
        print(
            f"{length:>4} min {stored.size / MIB:>9.1f} {ranged_bytes / 1024:>11.0f} {ranged_s:>9.3f}"
            f" {whole_bytes / 1024:>10.0f} {whole_s:>8.3f} {whole_bytes / max(1, ranged_bytes):>11.0f}x"
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
