"""The ``+experiment=<dataset>_<method>`` names, composed rather than written out.

A dataset's part of its experiments is ``conf/experiment/<dataset>_sft.yaml`` (its data
and SFT epochs); ``conf/experiment/_po.yaml`` adds the preference stage; an objective is
a file of ``conf/objective/``; a trained baseline a file of ``conf/baseline/`` with a
``model``. :func:`register` stores in Hydra's ConfigStore, for every dataset:

* ``<dataset>_po``: ``<dataset>_sft`` + ``_po``, the objective left to the ``objective``
  group (DMPO unless overridden): what a sweep over objectives runs under;
* ``<dataset>_<objective>`` for every objective: ``<dataset>_po`` with that objective;
  K = 1 when the objective refuses the default K but takes one negative (DPO);
* ``<dataset>_<baseline>`` for every trained baseline: the baseline task on the dataset
  (plus ``_<dataset>_baselines.yaml`` when the dataset has one).

A new file in ``conf/objective/`` or ``conf/baseline/``, or a new ``<dataset>_sft.yaml``,
gives its experiments with no other edit. A file of ``conf/experiment/`` with the same
name takes precedence (it is not registered here). Every entry point that composes the
config (``recpo.train``, ``recpo.config``) calls :func:`register` first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUP = "experiment"
PROVIDER = "recpo.experiment_configs"


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def _one_negative(objective_file: Path, default_k: int) -> bool:
    """Whether the objective refuses ``default_k`` negatives but takes one (its own
    ``negatives_problem``, checked on the objective the file builds)."""
    import hydra
    from omegaconf import OmegaConf

    objective = hydra.utils.instantiate(OmegaConf.load(objective_file))
    return objective.negatives_problem(default_k) is not None and (
        objective.negatives_problem(1) is None
    )


def experiment_nodes(conf: Path = CONF) -> dict[str, dict[str, Any]]:
    """Every composed experiment of ``conf``: ``{name: config node}``, the files of
    ``conf/experiment/`` left out."""
    from omegaconf import OmegaConf

    written = set(_names(conf / GROUP)) | {p.stem for p in (conf / GROUP).glob("_*.yaml")}
    default_k = OmegaConf.load(conf / GROUP / "_po.yaml").po.num_negatives
    datasets = [n.removesuffix("_sft") for n in _names(conf / GROUP) if n.endswith("_sft")]
    baselines = [
        n
        for n in _names(conf / "baseline")
        if "model" in OmegaConf.load(conf / "baseline" / f"{n}.yaml")
    ]
    objectives = {
        n: _one_negative(conf / "objective" / f"{n}.yaml", default_k)
        for n in _names(conf / "objective")
    }
    nodes: dict[str, dict[str, Any]] = {}
    for data in datasets:
        nodes[f"{data}_po"] = {"defaults": [f"{data}_sft", "_po"], "task_name": f"{data}_po"}
        for objective, one_negative in objectives.items():
            name = f"{data}_{objective}"
            node: dict[str, Any] = {
                "defaults": [f"{data}_sft", "_po", {"override /objective": objective}],
                "task_name": name,
            }
            if one_negative:
                node["po"] = {"num_negatives": 1}
            nodes[name] = node
        extra = (
            [f"_{data}_baselines"] if (conf / GROUP / f"_{data}_baselines.yaml").exists() else []
        )
        for baseline in baselines:
            name = f"{data}_{baseline}"
            nodes[name] = {
                "defaults": [
                    {"/baseline": baseline},
                    *extra,
                    {"override /data": data},
                    {"override /task": "baseline"},
                ],
                "task_name": name,
            }
    return {name: node for name, node in nodes.items() if name not in written}


def register(conf: Path = CONF) -> list[str]:
    """Store the composed experiments in Hydra's ConfigStore (again: idempotent).
    Returns their names."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    nodes = experiment_nodes(conf)
    # Names stored by an earlier call that a file now provides (or that are gone) go,
    # so the store always matches ``conf``.
    stored = store.repo.get(GROUP, {})
    for key in [k for k, v in stored.items() if getattr(v, "provider", None) == PROVIDER]:
        if key.removesuffix(".yaml") not in nodes:
            del stored[key]
    for name, node in nodes.items():
        store.store(group=GROUP, name=name, node=node, package="_global_", provider=PROVIDER)
    return sorted(nodes)


def register_once(conf: Path = CONF) -> None:
    """:func:`register` unless this process's store already holds the composed
    experiments (each config composition would otherwise read the conf files again)."""
    from hydra.core.config_store import ConfigStore

    stored = ConfigStore.instance().repo.get(GROUP, {}).values()
    if not any(getattr(node, "provider", None) == PROVIDER for node in stored):
        register(conf)
