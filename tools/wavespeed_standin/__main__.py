"""``python -m wavespeed_standin``: run the stand-in until Ctrl-C, for poking at it by hand."""

from __future__ import annotations

import argparse
import sys
import threading
from datetime import datetime

from .server import WaveSpeedStandin


def _log(line: str) -> None:
    sys.stderr.write(f"{datetime.now():%H:%M:%S} {line}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wavespeed_standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--api-key", default="local-standin-api-key")
    parser.add_argument("--webhook-secret", default="whsec_local-standin-secret")
    parser.add_argument("--seconds-per-output-second", type=float, default=0.0)
    parser.add_argument("--min-processing-seconds", type=float, default=0.2)
    parser.add_argument("--frame-rate", type=int, default=5)
    parser.add_argument("--video-height", type=int, default=240, help="0: the resolution each job asks for")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE", help="a fault knob, repeatable")
    args = parser.parse_args(argv)
    standin = WaveSpeedStandin(
        api_key=args.api_key,
        webhook_secret=args.webhook_secret,
        seconds_per_output_second=args.seconds_per_output_second,
        min_processing_seconds=args.min_processing_seconds,
        frame_rate=args.frame_rate,
        video_height=args.video_height or None,
        host=args.host,
        port=args.port,
        log=_log,
    )
    try:
        standin.faults.assign(args.fault)
    except ValueError as exc:
        parser.error(str(exc))
    with standin:
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            _log("interrupted")


if __name__ == "__main__":
    main()
