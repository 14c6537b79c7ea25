"""Command line: ``python -m labsupport broker up|down|status``, ``cache up|down|status``,
``doctor``, ``grade``, ``site``,
``exercises build|check``, ``progress``, ``classroom check|prepare|status|cleanup`` and
``bench``."""
from __future__ import annotations

import argparse
import sys

from . import broker, doctor
from .errors import LabError, require


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


def _cache(action: str) -> int:
    from . import cache_server

    if action == "up":
        record = cache_server.up()
        print(f"cache server: {record.kind} at {record.url}" +
              (f" (pid {record.pid})" if record.pid else ""))
        return 0
    if action == "down":
        record = cache_server.down()
        print(f"cache server: stopped the one at {record.url}" if record
              else "cache server: the lab had not started one")
        return 0
    record, answers = cache_server.status()
    if record is None:
        print("cache server: none running. Start one with `python -m labsupport cache up`.")
        return 1
    print(f"cache server: {record.kind} at {record.url}, "
          + ("answering" if answers else "NOT answering"))
    return 0 if answers else 1


def _exercises(action: str) -> int:
    from . import exercises_build

    if action == "build":
        for path in exercises_build.build():
            print(f"wrote {path}")
        return 0
    problems = exercises_build.check_in_sync()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"exercises/ is out of sync with solutions/. Fix: {exercises_build.FIX}",
              file=sys.stderr)
        return 1
    print("exercises/ is in sync with solutions/")
    return 0


def _classroom(args: argparse.Namespace) -> int:
    from . import classroom

    if args.action == "check":
        report = classroom.check()
        print(report)
        return 0 if report.can_create else 1
    if args.action == "cleanup":
        require(args.target is not None, "cleanup needs the namespace to delete.",
                "e.g. python -m labsupport classroom cleanup alice --yes")
        result = classroom.cleanup(args.target, yes=args.yes)
        print(result)
        return 1 if result.problems else 0
    learners = classroom.read_roster(args.target) if args.target else None
    if args.action == "prepare":
        require(learners is not None, "prepare needs a roster file.",
                "e.g. python -m labsupport classroom prepare roster.txt")
        outcome = classroom.prepare(learners)
        for name, why in sorted(outcome.items()):
            print(f"{'FAILED' if why else 'ok    '} {name}" + (f": {why}" if why else ""))
        return 1 if any(outcome.values()) else 0
    for row in classroom.status(learners):
        print(row)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labsupport",
                                     description="Latency Lab helper commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("broker", help="start, stop or show the lab's Kafka-protocol broker")
    b.add_argument("action", choices=["up", "down", "status"])
    k = sub.add_parser("cache", help="start, stop or show the lab's Redis-protocol cache server")
    k.add_argument("action", choices=["up", "down", "status"])
    sub.add_parser("doctor", help="check that the lab is ready; prints the fix for each failure")
    n = sub.add_parser("notebooks", help="authoring: store the outputs nbval checks")
    n.add_argument("action", choices=["store-outputs"])
    n.add_argument("paths", nargs="+")
    e = sub.add_parser("exercises", help="authoring: write exercises/ from solutions/, or check")
    e.add_argument("action", choices=["build", "check"])
    sub.add_parser("progress", help="print which exercises you have done")
    c = sub.add_parser("classroom", help="instructor: check the class cluster, prepare, "
                       "status, cleanup (see INSTRUCTORS.md)")
    c.add_argument("action", choices=["check", "prepare", "status", "cleanup"])
    c.add_argument("target", nargs="?", help="a roster file (prepare, status) or a "
                   "namespace (cleanup)")
    c.add_argument("--yes", action="store_true", help="cleanup: really delete (default: "
                   "only list)")
    bench = sub.add_parser("bench", help="measure the lab and the course; write BENCHMARKS.md")
    bench.add_argument("--skip", action="append", default=[], metavar="STEP",
                       choices=["harness", "broker", "test", "notebooks", "cold"],
                       help="leave out a step (repeatable)")
    bench.add_argument("--output", help="where to write the report (default BENCHMARKS.md)")
    g = sub.add_parser("grade", help="instructor: run learners' exercise notebooks and write "
                       "a score table, grades.json and junit.xml")
    g.add_argument("paths", nargs="+", help="one per learner: a notebook or a folder of them")
    g.add_argument("--timeout", type=float, default=900.0,
                   help="seconds each notebook may run (default 900)")
    g.add_argument("--out", default="grades", help="folder for the reports (default grades/)")
    s = sub.add_parser("site", help="build the course site (static HTML) into site/")
    s.add_argument("--from", dest="source", metavar="DIR", help="build from notebooks already "
                   "executed there (e.g. tests/artifacts/executed) instead of running them")
    s.add_argument("--out", help="where to write the site (default site/)")
    args = parser.parse_args(argv)
    try:
        if args.command == "broker":
            return _broker(args.action)
        if args.command == "cache":
            return _cache(args.action)
        if args.command == "notebooks":
            from .authoring import store_checked_outputs

            for path in args.paths:
                print(f"{path}: kept {store_checked_outputs(path)} checked outputs")
            return 0
        if args.command == "exercises":
            return _exercises(args.action)
        if args.command == "bench":
            from pathlib import Path

            from .bench import run

            path = run(tuple(args.skip), Path(args.output) if args.output else None)
            print(f"wrote {path}")
            return 0
        if args.command == "classroom":
            return _classroom(args)
        if args.command == "grade":
            from .grading import main as grade_main

            return grade_main(args.paths, args.timeout, args.out)
        if args.command == "site":
            from .site import main as site_main

            return site_main(args.source, args.out)
        if args.command == "progress":
            from .progress import table

            print(table())
            return 0
        return 0 if doctor.run().ok else 1
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
