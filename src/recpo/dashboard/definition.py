"""The W&B workspace and report of a sweep's runs, as ``wandb-workspaces`` objects.

What the dashboard groups and splits by comes from the runs' settings
(:class:`Layout`): one report section per number of negatives K (and per dataset,
backbone and candidate protocol when several), series per objective (and per any
other objective setting that varies, such as α, γ or a stage switch), seeds
aggregated as mean ± std. Every metric name comes from :mod:`recpo.metric_names`.

The serialised form is the one W&B stores: the workspace's ``View`` and the report's
``ReportViewspec`` (``wandb_workspaces`` pydantic models, camel-case JSON), so a
definition written offline is saved unchanged later (:meth:`Definition.save`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recpo import metric_names as names

FORMAT = "recpo-dashboard/1"
PO_STAGE = "po"

# Settings the dashboard splits or groups by: name -> where a run's config holds it
# (the first path of recpo.report.collect.FACTORS, the current config layout).
FACETS = ("dataset", "backbone", "candidates")  # a report section per combination
NEGATIVES = "num_negatives"  # ... and per K, always
SERIES = ("objective", "stage1", "stage2", "dynamic_beta", "alpha", "gamma", "k")
TABLE_SETTINGS = ("objective", NEGATIVES, "alpha", "gamma", "seed", "candidates")

# Training curves: (title, y keys, x key, smoothed). The y keys are what the training
# step logs (train/<diagnostic>) and what the validation loop logs every epoch.
_train = names.train_key
LINE_PANELS: tuple[tuple[str, tuple[str, ...], str, bool], ...] = (
    ("Reward win rate (Fig. 4b)", (_train(names.REWARD_WIN_RATE),), names.STEP, True),
    ("Reward margin", (_train(names.REWARD_MARGIN),), names.STEP, True),
    ("Pairwise reward accuracy", (_train(names.REWARD_PAIRWISE_ACCURACY),), names.STEP, True),
    ("Boundary-critical share (Fig. 3)", (_train(names.CRITICAL_SHARE),), names.STEP, True),
    (
        "Model-discriminative share (Fig. 3)",
        (_train(names.DISCRIMINATIVE_SHARE),),
        names.STEP,
        True,
    ),
    ("Negatives selected per example", (_train(names.SELECT_COUNT),), names.STEP, True),
    ("β mean", (_train(names.BETA_MEAN),), names.STEP, True),
    ("β std", (_train(names.BETA_STD),), names.STEP, True),
    ("val/hr@1 per epoch", (names.split_key("val", names.HR1),), names.EPOCH, False),
)
# Workspace sections: (name, titles of LINE_PANELS).
WORKSPACE_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Reward win rate (Fig. 4b)", ("Reward win rate (Fig. 4b)",)),
    ("Reward margin and accuracy", ("Reward margin", "Pairwise reward accuracy")),
    (
        "Boundary shares (Fig. 3)",
        ("Boundary-critical share (Fig. 3)", "Model-discriminative share (Fig. 3)"),
    ),
    ("Selected negatives and β", ("Negatives selected per example", "β mean", "β std")),
    ("Validation", ("val/hr@1 per epoch",)),
)
# Test metrics in the runs table: the preference stage's, then its SFT model's.
TEST_METRICS = (names.GEN_HR1, names.VALID_RATIO, names.HR1, names.HR5, names.NDCG5)
SMOOTHING = 0.6  # exponential smoothing of the training curves (W&B's 0..1 weight)


def setting_path(name: str) -> str:
    from recpo.report.jobs import FACTORS

    return FACTORS[name].paths[0]


def config_column(path: str) -> str:
    """The runs-table column of a config setting (``objective.alpha`` ->
    ``config:objective.value.alpha``): W&B stores each top-level config key as
    ``{"value": ...}``, so nested settings have ``.value`` after their first part."""
    first, _, rest = path.partition(".")
    return f"config:{first}.value" + (f".{rest}" if rest else "")


def summary_column(key: str) -> str:
    return f"summary:{key}"


@dataclass(frozen=True)
class Layout:
    """What the dashboard splits and groups by, from the runs' settings.

    Attributes:
        facets: settings with a report section per value combination (``dataset``,
            ``backbone``, ``candidates`` when they vary, then ``num_negatives``).
        series: settings whose combinations are the plotted series (``objective``
            and any :data:`SERIES` setting that varies), seeds aggregated.
        sections: the facet values of each report section, in order.
        table: settings shown as runs-table columns.
    """

    facets: tuple[str, ...]
    series: tuple[str, ...]
    sections: tuple[tuple[Any, ...], ...]
    table: tuple[str, ...] = field(default=TABLE_SETTINGS)

    @classmethod
    def from_settings(cls, runs: Sequence[dict[str, Any]]) -> Layout:
        """``runs``: the settings of each preference run, by factor name
        (:data:`recpo.report.collect.FACTORS`)."""
        if not runs:
            raise ValueError("no preference-optimization runs to build a dashboard for")

        def varies(name: str, within: str | None = None) -> bool:
            # A setting varies when two runs of one ``within`` value differ in it: an
            # objective setting that only DynamicPO has (α) does not split DMPO from it.
            seen: dict[str, set[str]] = {}
            for r in runs:
                key = json.dumps(r.get(within)) if within else ""
                seen.setdefault(key, set()).add(json.dumps(r.get(name), sort_keys=True))
            return any(len(values) > 1 for values in seen.values())

        varying = {n for n in FACETS if varies(n)} | {n for n in SERIES if varies(n, "objective")}
        facets = (*(n for n in FACETS if n in varying), NEGATIVES)
        series = ("objective", *(n for n in SERIES[1:] if n in varying))
        combos = {tuple(json.dumps(r.get(n)) for n in facets) for r in runs}
        sections = tuple(
            sorted(
                (tuple(json.loads(v) for v in combo) for combo in combos),
                key=lambda c: tuple(_orderable(v) for v in c),
            )
        )
        extra = tuple(n for n in ("dataset", "backbone", *SERIES[1:]) if n in varying)
        table = (*TABLE_SETTINGS, *(n for n in extra if n not in TABLE_SETTINGS))
        return cls(facets=facets, series=series, sections=sections, table=table)


def _orderable(value: Any) -> tuple:
    if isinstance(value, bool) or value is None:
        return (0, str(value))
    if isinstance(value, int | float):
        return (1, float(value))
    return (2, str(value))


def _section_title(layout: Layout, values: tuple[Any, ...]) -> str:
    label = {NEGATIVES: "K", "dataset": "", "backbone": "", "candidates": "candidates"}
    parts = []
    for name, value in zip(layout.facets, values):
        prefix = label.get(name, name)
        parts.append(f"{prefix} = {value}" if prefix else str(value))
    return ", ".join(parts)


def line_panels(titles: Iterable[str] | None = None) -> list[Any]:
    """``wandb_workspaces`` line plots of :data:`LINE_PANELS` (all, or those titled)."""
    import wandb_workspaces.reports.v2 as wr

    wanted = None if titles is None else list(titles)
    panels = []
    for title, ys, x, smooth in LINE_PANELS:
        if wanted is not None and title not in wanted:
            continue
        panels.append(
            wr.LinePlot(
                title=title,
                x=x,
                y=list(ys),
                smoothing_type="exponential" if smooth else "none",
                smoothing_factor=SMOOTHING if smooth else None,
                smoothing_show_original=smooth or None,
                groupby_aggfunc="mean",
                groupby_rangefunc="stddev",
            )
        )
    if wanted is not None:
        order = {t: i for i, t in enumerate(wanted)}
        panels.sort(key=lambda p: order[p.title])
    return panels


def bar_panels() -> list[Any]:
    """Bar charts of the preference runs' test HitRatio@1 and rank HR@1 (summary)."""
    import wandb_workspaces.reports.v2 as wr

    return [
        wr.BarPlot(
            title=f"test {metric}",
            metrics=[names.split_key("test", metric)],
            groupby_aggfunc="mean",
            groupby_rangefunc="stddev",
        )
        for metric in (names.GEN_HR1, names.HR1)
    ]


def table_columns(layout: Layout) -> list[str]:
    """Runs-table columns: the settings, the preference stage's test metrics, then
    those of its SFT model (the ``sft/`` summary keys of the preference run)."""
    columns = ["run:displayName", *(config_column(setting_path(n)) for n in layout.table)]
    tests = [names.split_key("test", m) for m in TEST_METRICS]
    columns += [summary_column(k) for k in tests]
    columns += [summary_column(names.sft_summary_key(k)) for k in tests]
    return columns


def _filters(group: str | None, facets: dict[str, Any] | None = None) -> list[Any]:
    from wandb_workspaces import expr

    filters = [expr.Metric("JobType") == PO_STAGE]
    if group:
        filters.append(expr.Metric("Group") == group)
    for name, value in (facets or {}).items():
        filters.append(expr.Config(setting_path(name)) == value)
    return filters


def build_workspace(layout: Layout, entity: str, project: str, group: str | None, name: str) -> Any:
    """A saved workspace view: the preference runs (of ``group``), grouped by the facets
    then the series, one section per metric family, the runs table's columns pinned."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    groupby = [expr.Config(setting_path(n)) for n in (*layout.facets, *layout.series)]
    sections = [
        ws.Section(name=section, panels=line_panels(titles), is_open=True)
        for section, titles in WORKSPACE_SECTIONS
    ]
    sections.append(ws.Section(name="Test metrics", panels=bar_panels(), is_open=True))
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=sections,
        settings=ws.WorkspaceSettings(
            x_axis=names.STEP,
            smoothing_type="exponential",
            smoothing_weight=int(SMOOTHING * 100),
            max_runs=100,
        ),
        runset_settings=ws.RunsetSettings(
            filters=_filters(group),
            groupby=groupby,
            pinned_columns=table_columns(layout),
        ),
    )


def build_report(layout: Layout, entity: str, project: str, group: str | None, name: str) -> Any:
    """A report: one section per facet combination (K, and dataset / backbone /
    candidates when several), each the training curves of its preference runs grouped
    by the series; then the runs table of every preference run with its test metrics
    and its SFT model's.

    Its run sets name no project (the report's own): naming one makes
    ``wandb_workspaces`` look its id up on the server when serialising.
    """
    import wandb_workspaces.reports.v2 as wr

    groupby = [f"config.{setting_path(n)}" for n in layout.series]
    blocks: list[Any] = [
        wr.H1(name),
        wr.P(
            "Preference-optimization runs"
            + (f" of group {group}" if group else "")
            + "; series: "
            + ", ".join(layout.series)
            + " (mean ± std over seeds); training curves smoothed exponentially."
        ),
    ]
    for values in layout.sections:
        title = _section_title(layout, values)
        blocks.append(wr.H2(title))
        blocks.append(
            wr.PanelGrid(
                runsets=[
                    wr.Runset(
                        entity="",
                        project="",
                        name=title,
                        filters=_filters(group, dict(zip(layout.facets, values))),
                        groupby=groupby,
                    )
                ],
                panels=line_panels(),
            )
        )
    blocks.append(wr.H2("Test metrics (preference stage, its SFT model beside it)"))
    blocks.append(
        wr.PanelGrid(
            runsets=[
                wr.Runset(
                    entity="",
                    project="",
                    name="preference runs",
                    filters=_filters(group),
                    pinned_columns=table_columns(layout),
                    lock_columns=True,
                )
            ],
            panels=bar_panels(),
        )
    )
    return wr.Report(entity=entity, project=project, title=name, blocks=blocks)


@dataclass
class Definition:
    """A dashboard: the workspace and the report of one project (and group)."""

    entity: str
    project: str
    group: str | None
    workspace: Any
    report: Any

    @classmethod
    def build(
        cls, layout: Layout, entity: str, project: str, group: str | None, name: str | None = None
    ) -> Definition:
        name = name or f"recpo {group or project}"
        return cls(
            entity=entity,
            project=project,
            group=group,
            workspace=build_workspace(layout, entity, project, group, name),
            report=build_report(layout, entity, project, group, name),
        )

    def to_json(self) -> dict[str, Any]:
        """The serialised form: W&B's own view specs (``wandb_workspaces`` models;
        ``_to_model`` is that library's only serialisation, not a public API)."""
        dump = {"by_alias": True, "exclude_none": True, "mode": "json"}
        return {
            "format": FORMAT,
            "entity": self.entity,
            "project": self.project,
            "group": self.group,
            "workspace": self.workspace._to_model().model_dump(**dump),
            "report": self.report._to_model().model_dump(**dump),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Definition:
        from wandb_workspaces.reports.v2 import Report
        from wandb_workspaces.reports.v2.internal import ReportViewspec
        from wandb_workspaces.workspaces import Workspace
        from wandb_workspaces.workspaces.internal import View

        if data.get("format") != FORMAT:
            raise ValueError(f"not a recpo dashboard definition (format {data.get('format')!r})")
        return cls(
            entity=data["entity"],
            project=data["project"],
            group=data.get("group"),
            workspace=Workspace._from_model(View.model_validate(data["workspace"])),
            report=Report._from_model(ReportViewspec.model_validate(data["report"])),
        )

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> Definition:
        return cls.from_json(json.loads(path.read_text()))

    def save(self) -> tuple[str, str]:
        """Save the workspace and the report to W&B (needs a key); their URLs."""
        self.workspace.save()
        for block in self.report.blocks:
            for runset in getattr(block, "runsets", []):
                runset.entity, runset.project = self.entity, self.project
        self.report.save()
        return self.workspace.url, self.report.url


def used_keys(definition: Definition) -> dict[str, set[str]]:
    """Every metric and setting the definition reads: ``history`` (line plots' y and x
    keys), ``summary`` (bar charts and summary columns) and ``config`` (grouping,
    filters and config columns, as dotted config paths)."""
    history: set[str] = set()
    summary: set[str] = set()
    config: set[str] = set()

    def panel_keys(panel: Any) -> None:
        kind = type(panel).__name__
        if kind == "LinePlot":
            history.update(_metric_name(m) for m in panel.y)
            history.add(_metric_name(panel.x))
        elif kind == "BarPlot":
            summary.update(_metric_name(m) for m in panel.metrics)

    def columns(cols: Iterable[str]) -> None:
        for col in cols:
            section, _, key = col.partition(":")
            if section == "summary":
                summary.add(key)
            elif section == "config":
                first, _, rest = key.partition(".value")
                config.add(first + rest)

    workspace = definition.workspace
    for section in workspace.sections:
        for panel in section.panels:
            panel_keys(panel)
    settings = workspace.runset_settings
    config.update(_metric_name(g) for g in settings.groupby)
    columns(settings.pinned_columns)
    config.update(re.findall(r'Config\("([^"]+)"\)', settings.filters))
    for block in definition.report.blocks:
        for panel in getattr(block, "panels", []):
            panel_keys(panel)
        for runset in getattr(block, "runsets", []):
            config.update(
                ".".join(p for p in g.split(".")[1:] if p != "value") for g in runset.groupby
            )
            config.update(re.findall(r'Config\("([^"]+)"\)', runset.filters))
            columns(runset.pinned_columns)
    return {"history": history, "summary": summary, "config": config}


def _metric_name(metric: Any) -> str:
    """A panel's metric as built (a name) or as read back (a ``Metric``)."""
    return metric if isinstance(metric, str) else metric.name
