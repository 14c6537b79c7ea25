"""Command line: ``python -m labsupport broker up|down|status`` and ``doctor``."""
from __future__ import annotations

import argparse
import sys

from . import broker, doctor
from .errors import LabError


def _broker(action: str) -> int:
    if action == "up":
        record = broker.up()
        print(f"broker: {record.kind} at {record.bootstrap}" +
              (f" (pid {record.pid})" if record.pid else ""))
        return 0
    if action == "down":
        record = broker.down()
        print(f"broker: stopped the {record.kind} broker at {record.bootstrap}" if record
              else "broker: the lab had not started one")
        return 0
    record, answers = broker.status()
    if record is None:
        print("broker: none running. Start one with `python -m labsupport broker up`.")
        return 1
    print(record.bootstrap)
    print(f"broker: {record.kind} at {record.bootstrap}, "
          + ("answering" if answers else "NOT answering: " + broker.resolve.fix_for(record)),
          file=sys.stderr)
    return 0 if answers else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labsupport",
                                     description="Latency Lab helper commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("broker", help="start, stop or show the lab's Kafka-protocol broker")
    b.add_argument("action", choices=["up", "down", "status"])
    sub.add_parser("doctor", help="check that the lab is ready; prints the fix for each failure")
    n = sub.add_parser("notebooks", help="authoring: store the outputs nbval checks")
    n.add_argument("action", choices=["store-outputs"])
    n.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "broker":
            return _broker(args.action)
        if args.command == "notebooks":
            from .authoring import store_checked_outputs

            for path in args.paths:
                print(f"{path}: kept {store_checked_outputs(path)} checked outputs")
            return 0
        return 0 if doctor.run().ok else 1
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
