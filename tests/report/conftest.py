"""A hand-made folder of sweeps with known results and training logs.

Layout as ``recpo.train -m`` writes it (``<sweep>/<data>-<backbone>/<job>/``), with
minimal configs: only the settings the report reads, plus a few shared ones.

Test-split HitRatio@1 (``gen_hr@1``) of the preference stage, per seed:

=====================================  ==================  ======  ==========
setting                                seeds               mean    sample std
=====================================  ==================  ======  ==========
lastfm DMPO K=3                        .50 .60 .70         .60     .10
lastfm DMPO K=15                       .40 .40 .52         .44     .069282
lastfm DynamicPO K=3                   .55 .65 .60         .60     .05
lastfm DynamicPO K=15                  .70 .72 .74         .72     .02
lastfm DynamicPO w/o Stage (I) K=15    .66 .68             .67     .014142
lastfm DynamicPO w/o dynamic β K=15    .60 .64             .62     .028284
lastfm Top-K k=2 K=15                  .50 .50             .50     0
lastfm Top-K k=3 K=15                  .52 .56             .54     .028284
lastfm DynamicPO α×γ K=15 (seed 0)     α + γ/100 for α ∈ {.1, .9}, γ ∈ {2, 10}
steam DMPO K=15                        .30                 .30     –
=====================================  ==================  ======  ==========

Other metrics: ``valid_ratio`` = .90 + .01·seed (mean .91, std .01 over seeds 0-2),
``hr@1`` = gen_hr@1 + .1, ``hr@5`` = .95, ``ndcg@5`` = .80. SFT stage (shared by all
jobs of one seed): gen_hr@1 .30 / .34 / .32 for seeds 0 / 1 / 2 on lastfm (mean .32,
std .02), .25 on steam (seed 0); valid_ratio .80.

Training logs (``logs/po/metrics.csv``, steps 0-9, Lightning's layout with a learning
rate row per step): win rate = step/10 + .01·seed; boundary-critical share = .1 + .01·step
for DMPO and .1 − .005·step otherwise (discriminative = 1 − critical); selected
negatives = 3 + step mod 2 for DynamicPO, k for Top-K. One unfinished job (config only).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

GEN = {
    ("lastfm", "dmpo", 3): [0.50, 0.60, 0.70],
    ("lastfm", "dmpo", 15): [0.40, 0.40, 0.52],
    ("lastfm", "dynamicpo", 3): [0.55, 0.65, 0.60],
    ("lastfm", "dynamicpo", 15): [0.70, 0.72, 0.74],
    ("steam", "dmpo", 15): [0.30],
}
SFT_GEN = {"lastfm": [0.30, 0.34, 0.32], "steam": [0.25]}

OBJECTIVES = {
    "dmpo": {"_target_": "recpo.objectives.losses.dmpo", "_partial_": True, "beta": 1.0},
    "dynamicpo": {
        "_target_": "recpo.objectives.plugin.dynamicpo",
        "_partial_": True,
        "beta": 1.0,
        "alpha": 0.5,
        "gamma": 6.0,
        "stage1": True,
        "stage2": True,
        "dynamic_beta": True,
    },
    "topk": {
        "_target_": "recpo.objectives.plugin.topk",
        "_partial_": True,
        "k": 3,
        "beta": 1.0,
        "alpha": 0.5,
        "gamma": 6.0,
        "dynamic_beta": False,
    },
}


def job_config(dataset: str, objective: str, negatives: int, seed: int, **switches) -> dict:
    obj = dict(OBJECTIVES[objective])
    obj.update(switches)
    return {
        "task_name": "hand",
        "seed": seed,
        "stages": ["sft", "po"],
        "scoring": "shared",
        "task": {"_target_": "recpo.pipeline.run_llm", "_partial_": True},
        "paths": {"output_dir": "${hydra:runtime.output_dir}", "cache_dir": ".cache"},
        "data": {
            "source": {"name": dataset, "cache_dir": "${paths.cache_dir}"},
            "num_negatives": negatives,
            "seed": "${seed}",
            "batch_size": 8,
        },
        "backbone": {"kind": "tiny", "tokenizer": "title", "lr": 1e-3, "po_lr": 1e-4},
        "objective": obj,
        "sft": {"max_epochs": 1},
        "po": {"max_epochs": 1},
        "eval": {"splits": ["val", "test"], "max_examples": None},
    }


def results(gen: float, seed: int, sft_gen: float) -> dict:
    out = {}
    for stage, g in (("po", gen), ("sft", sft_gen)):
        valid = 0.90 + 0.01 * seed if stage == "po" else 0.80
        metrics = {"gen_hr@1": g, "valid_ratio": valid, "hr@1": g + 0.1, "hr@5": 0.95}
        metrics.update({"ndcg@5": 0.80, "rows": 16})
        for key, value in metrics.items():
            out[f"{stage}:test/{key}"] = value
            out[f"{stage}:val/{key}"] = value / 2
    out.update({k.split(":", 1)[1]: v for k, v in out.items() if k.startswith("po:")})
    return out


def metrics_csv(objective: str, seed: int, k_select: int | None) -> str:
    """Lightning CSV layout: a learning-rate row and a training row per step, a val row."""
    cols = ["epoch", "lr-AdamW", "step", "train/boundary/critical_share"]
    cols += ["train/boundary/discriminative_share", "train/rewards/win_rate"]
    cols += ["train/select/count", "train/beta/mean", "val/hr@1"]
    lines = [",".join(cols)]
    for step in range(10):
        crit = 0.1 + 0.01 * step if objective == "dmpo" else 0.1 - 0.005 * step
        count = "" if k_select is None else str(k_select if objective == "topk" else 3 + step % 2)
        beta = "" if objective == "dmpo" else str(0.5 + 0.1 * (step % 2) + 0.01 * seed)
        lines.append(f",0.0001,{step},,,,,,")
        lines.append(f"0,,{step},{crit},{1 - crit},{step / 10 + 0.01 * seed},{count},{beta},")
    lines.append("0,,9,,,,,,0.5")
    return "\n".join(lines) + "\n"


def write_job(folder: Path, config: dict, res: dict | None, csv: str | None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if res is not None:
        import json

        (folder / "results.json").write_text(json.dumps(res))
    if csv is not None:
        (folder / "logs" / "po").mkdir(parents=True)
        (folder / "logs" / "po" / "metrics.csv").write_text(csv)
    return folder


def job_name(**overrides) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))


def make_sweeps(root: Path) -> Path:
    """Write the folder of sweeps described in the module docstring under ``root``."""
    for (dataset, objective, k), gens in GEN.items():
        sweep = root / ("negatives" if dataset == "lastfm" else "datasets") / f"{dataset}-tiny"
        for seed, gen in enumerate(gens):
            cfg = job_config(dataset, objective, k, seed)
            name = job_name(objective=objective, **{"data.num_negatives": k}, seed=seed)
            select = 1 if objective == "dynamicpo" else None
            write_job(
                sweep / name,
                cfg,
                results(gen, seed, SFT_GEN[dataset][seed]),
                metrics_csv(objective, seed, select),
            )
    ablations = {"stage1": [0.66, 0.68], "dynamic_beta": [0.60, 0.64]}
    for switch, gens in ablations.items():
        for seed, gen in enumerate(gens):
            cfg = job_config("lastfm", "dynamicpo", 15, seed, **{switch: False})
            name = job_name(**{f"objective.{switch}": "false"}, seed=seed)
            write_job(
                root / "ablations" / "lastfm-tiny" / name,
                cfg,
                results(gen, seed, SFT_GEN["lastfm"][seed]),
                metrics_csv("dynamicpo", seed, 1),
            )
    for k_sel, gens in {2: [0.50, 0.50], 3: [0.52, 0.56]}.items():
        for seed, gen in enumerate(gens):
            cfg = job_config("lastfm", "topk", 15, seed, k=k_sel)
            write_job(
                root / "topk" / "lastfm-tiny" / job_name(**{"objective.k": k_sel}, seed=seed),
                cfg,
                results(gen, seed, SFT_GEN["lastfm"][seed]),
                metrics_csv("topk", seed, k_sel),
            )
    for alpha in (0.1, 0.9):
        for gamma in (2.0, 10.0):
            cfg = job_config("lastfm", "dynamicpo", 15, 0, alpha=alpha, gamma=gamma)
            name = job_name(**{"objective.alpha": alpha, "objective.gamma": gamma})
            write_job(
                root / "alpha_gamma" / "lastfm-tiny" / name,
                cfg,
                results(alpha + gamma / 100, 0, SFT_GEN["lastfm"][0]),
                None,
            )
    write_job(
        root / "negatives" / "lastfm-tiny" / "unfinished-job",
        job_config("lastfm", "dmpo", 7, 0),
        None,
        None,
    )
    return root


@pytest.fixture
def sweeps(tmp_path: Path) -> Path:
    return make_sweeps(tmp_path / "multirun")


def make_small(root: Path) -> Path:
    """Four DMPO jobs (K = 3, 15; seeds 0, 1; values from :data:`GEN`) without training
    logs, and one unfinished job: a report of two tables and one figure."""
    for k in (3, 15):
        for seed in (0, 1):
            write_job(
                root / "negatives" / "lastfm-tiny" / job_name(k=k, seed=seed),
                job_config("lastfm", "dmpo", k, seed),
                results(GEN["lastfm", "dmpo", k][seed], seed, SFT_GEN["lastfm"][seed]),
                None,
            )
    write_job(
        root / "negatives" / "lastfm-tiny" / "unfinished-job",
        job_config("lastfm", "dmpo", 7, 0),
        None,
        None,
    )
    return root


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return make_small(tmp_path / "multirun")
