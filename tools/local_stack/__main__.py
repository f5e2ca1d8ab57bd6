"""``python -m local_stack demo|up|soak``."""

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
    run_soak = commands.add_parser("soak", help="N jobs with every fault on at once; exits 1 if an invariant fails")
    run_soak.add_argument("--jobs", type=int, default=1000, help="how many jobs to drop (default 1000)")
    run_soak.add_argument("--rate", type=float, default=0.8, help="drops per second (default 0.8)")
    run_soak.add_argument("--seed", type=int, default=7, help="seeds every fault's generator")
    run_soak.add_argument(
        "--settle-timeout", type=float, default=900.0, help="seconds to wait after the last drop (default 900)"
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
        if args.command == "soak":
            from .soak import main as soak

            return soak(args.jobs, args.rate, args.seed, args.settle_timeout)
        return up(args.moto_port, args.api_port, args.standin_port, args.fault, args.console_port)
    except KeyboardInterrupt:
        print("interrupted; the local stack has stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
