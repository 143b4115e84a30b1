"""Every experiment and documented sweep composes to the config recorded in a fixture.

The fixture (``fixtures/composed_configs.json``) holds, for each ``+experiment=NAME``,
the composed config without the ``hydra`` node (``resolve=False``: interpolations as
written), and for each sweep with the experiment its command line is documented with,
that config plus the sweep folder (resolved), ``hydra.job``, the sweeper's parameters
and the group choices. A change to ``conf/experiment/`` or ``conf/sweep/`` that only
reorganises files keeps every entry equal, key order included.

Record it again only when a change of settings is intended:
``.venv/bin/python -m tests.pipeline.test_compose --record`` (refuses to replace an
existing fixture unless ``--overwrite`` is given).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF

FIXTURE = Path(__file__).parent / "fixtures" / "composed_configs.json"

DATASETS = ("lastfm", "goodreads", "steam")
LLM_OBJECTIVES = (
    "sft",
    "dpo",
    "dmpo",
    "sdpo",
    "mppo",
    "dynamicpo",
    "dynamicpo_sdpo",
    "dynamicpo_mppo",
)
BASELINES = ("gru4rec", "caser", "sasrec")
EXPERIMENTS = ("demo", "lastfm_study") + tuple(
    f"{dataset}_{method}" for dataset in DATASETS for method in LLM_OBJECTIVES + BASELINES
)
# Added after the fixture was first recorded (appended, so earlier entries keep their place).
EXPERIMENTS += tuple(f"{dataset}_po" for dataset in DATASETS) + (
    "list_oracle",
    "lastfm_smollm2_study",
    "smollm2_study",
)
# Each committed sweep with the experiments it is run with (README, the sweep files).
SWEEPS = (
    "ablations",
    "alpha_gamma",
    "backbones",
    "datasets",
    "negatives",
    "objectives",
    "po_grid",
    "topk",
)
# lastfm_po: the experiment the sweeps that choose the objective are documented with.
SWEEP_EXPERIMENTS = ("lastfm_dynamicpo", "demo", "lastfm_po")


def _plain(node: Any, resolve: bool) -> Any:
    """A JSON-shaped copy (keys as JSON writes them), key order kept."""
    return json.loads(json.dumps(OmegaConf.to_container(node, resolve=resolve)))


def _compose(overrides: list[str], hydra: bool):
    from hydra import compose, initialize_config_dir

    import recpo.train  # noqa: F401  (the recpo.job_dirname resolver of the sweep folders)
    from recpo.experiment_configs import register_once

    register_once()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra)


def experiment_config(name: str) -> dict:
    return _plain(_compose([f"+experiment={name}"], hydra=False), resolve=False)


def sweep_config(experiment: str, sweep: str) -> dict:
    cfg = _compose([f"+experiment={experiment}", f"+sweep={sweep}"], hydra=True)
    hydra = cfg.hydra
    record = {
        "sweep": _plain(hydra.sweep, resolve=True),
        "job": {
            "chdir": hydra.job.chdir,
            "config": _plain(hydra.job.config, resolve=True),
        },
        "params": _plain(hydra.sweeper.params, resolve=False),
        "choices": _plain(hydra.runtime.choices, resolve=False),
    }
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    record["config"] = _plain(cfg, resolve=False)
    return record


def sweep_key(experiment: str, sweep: str) -> str:
    return f"+experiment={experiment} +sweep={sweep}"


def record_all() -> dict:
    return {
        "experiments": {name: experiment_config(name) for name in EXPERIMENTS},
        "sweeps": {sweep_key(e, s): sweep_config(e, s) for s in SWEEPS for e in SWEEP_EXPERIMENTS},
    }


def _expected() -> dict:
    if not FIXTURE.is_file():
        pytest.fail(f"{FIXTURE} missing: record it with python -m tests.pipeline.test_compose")
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Paths where two JSON values differ (values, missing keys or key order)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in expected.keys() | actual.keys():
            if key not in actual:
                out.append(f"{where}.{key}: missing (expected {expected[key]!r})")
            elif key not in expected:
                out.append(f"{where}.{key}: unexpected {actual[key]!r}")
            else:
                out += _differences(expected[key], actual[key], f"{where}.{key}")
        if not out and list(expected) != list(actual):
            out.append(f"{where}: key order {list(actual)} != {list(expected)}")
        return out
    if expected != actual or type(expected) is not type(actual):
        return [f"{where}: {actual!r} != expected {expected!r}"]
    return []


def test_fixture_covers_every_documented_command():
    expected = _expected()
    assert list(expected["experiments"]) == list(EXPERIMENTS)
    assert list(expected["sweeps"]) == [sweep_key(e, s) for s in SWEEPS for e in SWEEP_EXPERIMENTS]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_as_recorded(name):
    diff = _differences(_expected()["experiments"][name], experiment_config(name))
    assert not diff, f"+experiment={name}:\n" + "\n".join(diff)


@pytest.mark.parametrize("experiment", SWEEP_EXPERIMENTS)
@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_composes_as_recorded(sweep, experiment):
    key = sweep_key(experiment, sweep)
    diff = _differences(_expected()["sweeps"][key], sweep_config(experiment, sweep))
    assert not diff, f"{key}:\n" + "\n".join(diff)


def test_differences_sees_values_keys_and_order():
    assert _differences({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 2]}) == []
    assert _differences({"a": 1}, {"a": 2}) == [".a: 2 != expected 1"]
    assert _differences({"a": 1}, {"a": 1.0}) == [".a: 1.0 != expected 1"]
    assert _differences({"a": 1}, {}) == [".a: missing (expected 1)"]
    assert _differences({}, {"a": 1}) == [".a: unexpected 1"]
    assert _differences({"a": 1, "b": 2}, {"b": 2, "a": 1}) == [
        ": key order ['b', 'a'] != ['a', 'b']"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the fixture")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing fixture")
    args = parser.parse_args()
    if not args.record:
        parser.error("nothing to do: pass --record")
    if FIXTURE.exists() and not args.overwrite:
        raise SystemExit(f"{FIXTURE} exists: pass --overwrite to replace it")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(record_all(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
