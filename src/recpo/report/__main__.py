"""``python -m recpo.report PATH [--out DIR] [--split test] [--wandb]``

PATH is a run folder, a sweep folder or a folder of sweeps. Writes the tables, figures
and ``report.md`` into DIR (default ``PATH/report``); with ``--wandb`` also logs them to
one W&B run (job type ``report``) in the sweep's group, offline unless ``--online``.
Bad input stops it with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from recpo.errors import ReportError
from recpo.report.build import build_report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recpo.report",
        description="Tables and figures of the finished jobs under PATH.",
    )
    parser.add_argument(
        "path", type=Path, help="a run folder, a sweep folder or a folder of sweeps"
    )
    parser.add_argument("--out", type=Path, default=None, help="report folder (PATH/report)")
    parser.add_argument("--split", default="test", help="evaluation split to report (test)")
    parser.add_argument("--wandb", action="store_true", help="also log to one W&B report run")
    parser.add_argument("--group", default=None, help="W&B group (default: the jobs' group)")
    parser.add_argument("--project", default=None, help="W&B project (default: the jobs')")
    parser.add_argument("--online", action="store_true", help="W&B online (default offline)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shown = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "recpo.report", *map(str, shown)])
    try:
        report = build_report(args.path, args.out, args.split, command=command)
        print(f"report: {report.out / 'report.md'}")
        for name in report.files:
            print(f"  {name}")
        if report.study.unfinished:
            print(f"unfinished jobs (not reported): {len(report.study.unfinished)}")
            for path in report.study.unfinished:
                print(f"  {path}")
        for reason in report.skipped:
            print(f"not drawn: {reason}")
        if args.wandb:
            from recpo.report.wandb_run import log_report

            where = log_report(report, group=args.group, project=args.project, online=args.online)
            print(f"W&B report run: {where}")
    except ReportError as err:
        print(f"recpo.report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
