"""The composed ``+experiment=<dataset>_<method>`` names (recpo.experiment_configs): a
new objective file gives its experiments with no other edit; DPO's K comes from its
own rule; a file of conf/experiment takes precedence over a composed name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from recpo.experiment_configs import experiment_nodes, register
from tests.conftest import CONF

NEW_OBJECTIVE = """\
_target_: recpo.objectives.losses.dmpo
beta: 2.5
reference_free: false
"""


@pytest.fixture
def conf_copy(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    yield conf
    register()  # the real conf's nodes again


def _compose(conf: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_every_dataset_gets_every_objective_and_trained_baseline():
    names = set(experiment_nodes())
    objectives = {p.stem for p in (CONF / "objective").glob("*.yaml")}
    for data in ("lastfm", "steam", "goodreads"):
        assert {f"{data}_{o}" for o in objectives} <= names
        assert {f"{data}_{b}" for b in ("gru4rec", "caser", "sasrec")} <= names
        assert f"{data}_po" in names
        assert f"{data}_list_oracle" not in names  # model-free: its own experiment
    assert not {p.stem for p in (CONF / "experiment").glob("*.yaml")} & names


def test_a_new_objective_file_gives_its_experiments(conf_copy):
    (conf_copy / "objective" / "my_objective.yaml").write_text(NEW_OBJECTIVE)
    assert "steam_my_objective" in register(conf_copy)
    cfg = _compose(conf_copy, ["+experiment=steam_my_objective"])
    assert cfg.objective.beta == 2.5 and cfg.task_name == "steam_my_objective"
    assert cfg.data.source.name == "steam" and cfg.stages == ["sft", "po"]
    assert cfg.po.num_negatives == 15 and cfg.sft.max_epochs == 3  # steam_sft's epochs


def test_dpo_takes_one_negative_from_its_own_rule():
    nodes = experiment_nodes()
    assert nodes["lastfm_dpo"]["po"] == {"num_negatives": 1}
    assert "po" not in nodes["lastfm_dmpo"] and "po" not in nodes["lastfm_topk"]


def test_an_experiment_file_takes_precedence(conf_copy):
    (conf_copy / "experiment" / "lastfm_dmpo.yaml").write_text(
        "# @package _global_\ndefaults:\n  - lastfm_sft\n  - _po\ntask_name: mine\n"
    )
    assert "lastfm_dmpo" not in register(conf_copy)
    assert _compose(conf_copy, ["+experiment=lastfm_dmpo"]).task_name == "mine"
