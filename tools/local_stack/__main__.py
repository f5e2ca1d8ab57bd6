"""``python -m local_stack demo|up``."""

from __future__ import annotations

import argparse
import signal
import sys

from wavespeed_standin import Faults

from .demo import demo, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack", description="The pipeline on this machine.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="drop a one- and a two-speaker job and show the result")
    run_demo.add_argument("--verbose", action="store_true", help="show every function's log")
    run_demo.add_argument("--timeout", type=float, default=300.0)
    run_up = commands.add_parser("up", help="keep the stack running until Ctrl-C")
    run_up.add_argument("--moto-port", type=int, default=0, help="AWS endpoint port (0: any free port)")
    run_up.add_argument("--api-port", type=int, default=0, help="webhook endpoint port (0: any free port)")
    run_up.add_argument("--standin-port", type=int, default=0, help="WaveSpeed stand-in port (0: any free port)")
    run_up.add_argument("--console-port", type=int, default=0, help="web console port (0: any free port)")
    run_up.add_argument(
        "--fault", action="append", default=[], metavar="NAME=VALUE", help="a stand-in fault knob, repeatable"
    )
    args = parser.parse_args(argv)
    # Ctrl-C and a plain `kill` both stop the stack cleanly, even when started in the background.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.command == "up":
        try:
            Faults().assign(args.fault)  # refuse a misspelt knob before anything starts
        except ValueError as exc:
            parser.error(str(exc))
    try:
        if args.command == "demo":
            return demo(verbose=args.verbose, timeout=args.timeout)
        return up(args.moto_port, args.api_port, args.standin_port, args.fault, args.console_port)
    except KeyboardInterrupt:
        print("interrupted; the local stack has stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
