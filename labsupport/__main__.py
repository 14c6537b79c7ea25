"""Command line: ``python -m labsupport broker up|down|status``, ``cache up|down|status``,
``doctor``, ``grade``, ``site``,
``exercises build|check``, ``progress``, ``classroom check|prepare|status|cleanup`` and
``bench``."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from labsupport import broker
from labsupport.course import doctor
from labsupport.runtime.errors import LabError, require


def _server(action: str, what: str, command: str, module: Any, address: str,
            fix: Callable[[Any], str] = lambda record: "", script_friendly: bool = False) -> int:
    """``up``, ``down`` or ``status`` of a server the lab starts (the broker, the cache);
    ``address`` names the record's field holding where it listens. ``script_friendly``
    status prints only the address on stdout (the words go to stderr)."""
    if action == "up":
        record = module.up()
        print(f"{what}: {record.kind} at {getattr(record, address)}" +
              (f" (pid {record.pid})" if record.pid else ""))
        return 0
    if action == "down":
        record = module.down()
        print(f"{what}: stopped the {record.kind} one at {getattr(record, address)}" if record
              else f"{what}: the lab had not started one")
        return 0
    record, answers = module.status()
    if record is None:
        print(f"{what}: none running. Start one with `python -m labsupport {command} up`.")
        return 1
    if script_friendly:
        print(getattr(record, address))
    print(f"{what}: {record.kind} at {getattr(record, address)}, "
          + ("answering" if answers else "NOT answering" + fix(record)),
          file=sys.stderr if script_friendly else sys.stdout)
    return 0 if answers else 1


def _broker(action: str) -> int:
    return _server(action, "broker", "broker", broker, "bootstrap",
                   lambda record: ": " + broker.resolve.fix_for(record), script_friendly=True)


def _cache(action: str) -> int:
    from labsupport.runtime import cache_server

    return _server(action, "cache server", "cache", cache_server, "url")


def _exercises(action: str) -> int:
    from labsupport.course import exercises_build

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
    from labsupport.course import classroom

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
            from labsupport.course.authoring import store_checked_outputs

            for path in args.paths:
                print(f"{path}: kept {store_checked_outputs(path)} checked outputs")
            return 0
        if args.command == "exercises":
            return _exercises(args.action)
        if args.command == "bench":
            from pathlib import Path

            from labsupport.course.bench import run

            path = run(tuple(args.skip), Path(args.output) if args.output else None)
            print(f"wrote {path}")
            return 0
        if args.command == "classroom":
            return _classroom(args)
        if args.command == "grade":
            from labsupport.course.grading import main as grade_main

            return grade_main(args.paths, args.timeout, args.out)
        if args.command == "site":
            from labsupport.course.site import main as site_main

            return site_main(args.source, args.out)
        if args.command == "progress":
            from labsupport.exercises import progress_table

            print(progress_table())
            return 0
        return 0 if doctor.run().ok else 1
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
