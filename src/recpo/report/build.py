"""Write a report folder: Markdown and CSV tables, PNG figures, ``runs.csv`` (every
result used, one line per job and stage) and ``report.md`` tying them together.

Files are drawn into a scratch folder first and moved into place at the end. The
report only replaces files that an earlier report wrote there (listed in its
``report.json``); any other file in the way stops it with an error.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recpo.errors import ReportError
from recpo.report.collect import Study, collect
from recpo.report.figures import FigureFile, make_figures
from recpo.report.labels import CONTEXT_TITLES, METRICS, show
from recpo.report.table import Table, TextTable
from recpo.report.tables import make_tables

MANIFEST = "report.json"
_MARK = "recpo.report"


@dataclass
class Report:
    study: Study
    split: str
    out: Path
    tables: list[Table | TextTable]
    figures: list[FigureFile]
    skipped: list[str]
    files: list[str] = field(default_factory=list)


def _rel(path: Path, root: Path) -> str:
    try:
        rel = path.resolve().relative_to(root.resolve())
        return str(rel) if str(rel) != "." else "."
    except ValueError:
        return str(path)


def runs_frame(study: Study, split: str) -> pd.DataFrame:
    """One line per result used (condition member): where it came from, its settings
    and its metrics on ``split``."""
    records = []
    for cond in study.conditions:
        for entry in cond.entries:
            f = entry.factors
            record = {
                "job": _rel(entry.job.path, study.root),
                "stage": entry.part,
                "method": entry.method,
                "dataset": f.get("dataset"),
            }
            for name in CONTEXT_TITLES:
                record[name] = show(f.get(name))
            record["k"] = show(f.get("k"))
            record["seed"] = entry.seed
            for key, value in cond.extras.items():
                record[key] = show(value)
            for metric in METRICS:
                record[f"{split}/{metric}"] = entry.metrics.get(f"{split}/{metric}")
            records.append(record)
    return pd.DataFrame.from_records(records)


def _markdown(report: Report, command: str | None) -> str:
    study = report.study
    lines = [f"# Report: {study.root}", ""]
    if command:
        lines += [f"Made with `{command}`.", ""]
    per_stage: dict[str, int] = {}
    for cond in study.conditions:
        per_stage[cond.part] = per_stage.get(cond.part, 0) + len(cond.entries)
    lines.append(
        f"Finished jobs: {len(study.jobs)} ("
        + ", ".join(f"{n} {stage} results" for stage, n in sorted(per_stage.items()))
        + f"); settings: {len(study.conditions)}; split: {report.split}."
    )
    if study.unfinished:
        lines.append(
            f"Unfinished jobs (no results.json), not reported: {len(study.unfinished)}: "
            + ", ".join(f"`{_rel(p, study.root)}`" for p in study.unfinished)
        )
    else:
        lines.append("Unfinished jobs: 0.")
    for kept, dropped in study.duplicates:
        lines.append(
            f"Left out `{_rel(dropped, study.root)}`: same settings and seed as "
            f"`{_rel(kept, study.root)}`."
        )
    protocols = sorted({show(c.factors.get("candidates")) for c in study.conditions} - {"–"})
    if protocols:
        lines += [
            "",
            f"Candidate lists (`data.candidates`): {', '.join(protocols)}"
            + (
                " (every table and figure)."
                if len(protocols) == 1
                else " (each table names it per row, each figure per panel)."
            )
            + (
                " Under `published` each list is a function of the row's history, target "
                "and catalogue, and reveals the target: a model-free list oracle reaches "
                "HitRatio@1 1.0 (README, Data). A figure under `published` measures in part "
                "how much of that mapping a model learned."
                if "published" in protocols
                else ""
            ),
        ]
    varying = study.varying()
    if varying:
        lines += ["", "What varies:", ""]
        for name, values in varying.items():
            lines.append(f"- {name}: {', '.join(show(v) for v in values)}")
    lines += ["", "Every result used, per job and seed: `runs.csv`.", "", "## Tables", ""]
    for table in report.tables:
        lines += [table.markdown(), f"CSV: `{table.name}.csv`", ""]
    if report.figures:
        lines += ["## Figures", ""]
        for fig in report.figures:
            lines += [f"### {fig.title}", "", f"![{fig.kind}]({fig.name})", ""]
            if fig.note:
                lines += [f"**Note.** {fig.note}", ""]
    if report.skipped:
        lines += ["## Not drawn", ""]
        lines += [f"- {reason}" for reason in report.skipped]
        lines.append("")
    return "\n".join(lines)


def _previous_files(out: Path) -> set[str]:
    manifest = out / MANIFEST
    if not manifest.is_file():
        return set()
    try:
        data = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or data.get("written_by") != _MARK:
        raise ReportError(f"{manifest} was not written by recpo.report; choose another --out")
    return set(data.get("files", []))


def _install(scratch: Path, out: Path, files: list[str], meta: dict) -> None:
    """Move the new files into ``out``, replacing only files an earlier report wrote."""
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_files(out)
    for name in files:
        if (out / name).exists() and name not in previous:
            raise ReportError(
                f"{out / name} exists and was not written by recpo.report; "
                "move it or choose another --out"
            )
    for name in sorted(previous - set(files)):
        stale = out / name
        if stale.is_file():
            stale.unlink()
    for name in files:
        shutil.move(str(scratch / name), str(out / name))
    manifest = {"written_by": _MARK, "files": sorted(files), **meta}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def build_report(
    root: Path, out: Path | None = None, split: str = "test", command: str | None = None
) -> Report:
    """Read every job under ``root`` and write the report into ``out`` (default
    ``root/report``)."""
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    study = collect(root)
    if not any(cond.values(split, m) for cond in study.conditions for m in METRICS):
        raise ReportError(
            f"{root}: no finished job has {split} metrics (results.json keys like "
            f"po:{split}/gen_hr@1); choose --split from the job's eval.splits"
        )
    tables, skipped = make_tables(study.conditions, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=out.parent) as tmp:
        scratch = Path(tmp)
        figures, fig_skipped = make_figures(study.conditions, split, scratch)
        report = Report(study, split, out, tables, figures, skipped + fig_skipped)
        files = []
        for table in tables:
            table.frame().to_csv(scratch / f"{table.name}.csv", index=False)
            (scratch / f"{table.name}.md").write_text(table.markdown())
            files += [f"{table.name}.csv", f"{table.name}.md"]
        runs_frame(study, split).to_csv(scratch / "runs.csv", index=False)
        files += ["runs.csv", *(f.name for f in figures), "report.md"]
        (scratch / "report.md").write_text(_markdown(report, command))
        meta = {
            "path": str(root),
            "split": split,
            "finished_jobs": len(study.jobs),
            "unfinished_jobs": [str(p) for p in study.unfinished],
        }
        _install(scratch, out, files, meta)
    report.files = files
    return report
