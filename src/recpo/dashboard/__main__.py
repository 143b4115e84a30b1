"""``python -m recpo.dashboard [PATH] --entity E [--project P] [--group G] [--out FILE]``
and ``python -m recpo.dashboard --push FILE``.

Builds the W&B workspace and report of a sweep's preference runs (PATH: its folder,
which gives the settings that vary, the group and the project; without PATH they are
read from W&B). With ``WANDB_API_KEY`` set (and no ``--offline``) both are saved and
their URLs printed; the definition is always written to FILE (default
``PATH/dashboard.json``), and ``--push FILE`` saves a written one later. Bad input
stops it with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from recpo.dashboard.definition import Definition, Layout
from recpo.dashboard.runs import folder_runs, wandb_runs
from recpo.errors import DashboardError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recpo.dashboard",
        description="W&B workspace and report of a sweep's preference runs.",
    )
    parser.add_argument(
        "path", type=Path, nargs="?", default=None, help="a run, sweep or folder of sweeps"
    )
    parser.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"), help="W&B entity")
    parser.add_argument("--project", default=None, help="W&B project (default: the jobs')")
    parser.add_argument("--group", default=None, help="W&B group (default: the jobs' group)")
    parser.add_argument("--name", default=None, help="workspace and report title")
    parser.add_argument("--out", type=Path, default=None, help="definition file to write")
    parser.add_argument("--offline", action="store_true", help="only write the definition")
    parser.add_argument("--push", type=Path, default=None, help="save a written definition")
    return parser.parse_args(argv)


def _online(offline: bool) -> bool:
    return not offline and bool(os.environ.get("WANDB_API_KEY"))


def _save(definition: Definition) -> None:
    workspace_url, report_url = definition.save()
    print(f"workspace: {workspace_url}")
    print(f"report: {report_url}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.push is not None:
            if not os.environ.get("WANDB_API_KEY"):
                raise DashboardError("--push needs WANDB_API_KEY set")
            _save(Definition.read(args.push))
            return 0
        if not args.entity:
            raise DashboardError("no W&B entity: pass --entity or set WANDB_ENTITY")
        if args.path is not None:
            runs, group, project = folder_runs(args.path)
            group = args.group or group
            project = args.project or project or "recpo"
        else:
            project, group = args.project or "recpo", args.group
            if not _online(args.offline):
                raise DashboardError("without PATH the runs are read from W&B: set WANDB_API_KEY")
            runs = wandb_runs(args.entity, project, group)
        definition = Definition.build(
            Layout.from_settings(runs), args.entity, project, group, args.name
        )
        out = args.out or (args.path / "dashboard.json" if args.path else Path("dashboard.json"))
        definition.write(out)
        print(f"definition: {out}")
        if _online(args.offline):
            _save(definition)
        else:
            print(f"push it later with: python -m recpo.dashboard --push {out} (WANDB_API_KEY set)")
    except DashboardError as err:
        print(f"recpo.dashboard: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
