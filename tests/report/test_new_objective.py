"""A new objective needs its class and its YAML, nothing in the report.

:class:`ScaledDMPO` exists only in this module, its YAML only in a temporary config
folder. Jobs of it, composed with the real config, sit beside DMPO jobs; the report
names, orders and pairs them from what the class says about itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from recpo.objectives.losses import DMPO, dmpo_losses
from recpo.report import build_report
from tests.conftest import compose
from tests.report.conftest import results


@dataclass(frozen=True, kw_only=True)
class ScaledDMPO(DMPO):
    """DMPO with the negatives' log-ratios scaled by ``scale``: a stand-in for a new
    objective."""

    label = "Scaled DMPO"
    label_keys = ("scale",)
    paired_with = DMPO
    order = (5, 1)
    scale: float = 0.5

    def pair_losses(self, chosen: Tensor, rejected: Tensor, beta, mask: Tensor) -> Tensor:
        return dmpo_losses(chosen, self.scale * rejected, beta, mask)


scaled_dmpo = ScaledDMPO()

YAML = f"""\
_target_: {__name__}.scaled_dmpo
beta: 1.0
reference_free: false
scale: 0.5
"""
# HitRatio@1 of the preference stage per seed; SFT .30 / .34.
GEN = {"dmpo": [0.50, 0.60], "scaled_dmpo": [0.55, 0.70]}


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    (conf / "objective").mkdir(parents=True)
    (conf / "objective" / "scaled_dmpo.yaml").write_text(YAML)
    root = tmp_path / "sweep"
    for objective, gens in GEN.items():
        for seed, gen in enumerate(gens):
            overrides = ["+experiment=demo", f"objective={objective}", f"seed={seed}"]
            cfg = compose([*overrides, f"hydra.searchpath=[file://{conf}]"], tmp_path)
            folder = root / f"objective={objective},seed={seed}"
            folder.mkdir(parents=True)
            OmegaConf.save(cfg, folder / "config.yaml", resolve=False)
            sft = (0.30, 0.34)[seed]
            (folder / "results.json").write_text(json.dumps(results(gen, seed, sft)))
    return root


def test_the_yaml_builds_the_objective(jobs):
    cfg = OmegaConf.load(jobs / "objective=scaled_dmpo,seed=0" / "config.yaml")
    assert instantiate(cfg.objective) == ScaledDMPO(scale=0.5)


def test_a_new_objective_is_labelled_ordered_and_paired_from_its_class(jobs, tmp_path):
    report = build_report(jobs, tmp_path / "report")
    table2 = pd.read_csv(report.out / "table2.csv")
    label = "Scaled DMPO (scale=0.5)"
    assert table2["method"].tolist() == ["SFT", "DMPO", label]  # its order: after DMPO
    assert table2.set_index("method").loc[label, "synthetic/test/gen_hr@1/mean"] == (
        pytest.approx(0.625)
    )
    paired = pd.read_csv(report.out / "paired.csv").set_index(["method", "minus"])
    # Seed by seed against DMPO, its paired_with: .55 - .50, .70 - .60.
    assert paired.loc[(label, "DMPO"), "synthetic/test/gen_hr@1/mean"] == pytest.approx(0.075)
    assert paired.loc[(label, "SFT"), "synthetic/test/gen_hr@1/mean"] == pytest.approx(0.305)
    assert ("DMPO", "Scaled DMPO") not in paired.index
