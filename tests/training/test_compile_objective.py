"""po.compile_objective: the PO stage runs its objective through torch.compile and
ends where the eager run does (to float rounding)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from omegaconf import open_dict

from recpo.train import train
from tests.conftest import compose

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
        reason="Inductor on a CPU needs a C++ compiler (none on PATH)",
    ),
    pytest.mark.skipif(
        bool(os.environ.get("ATEN_CPU_CAPABILITY")),
        reason="Inductor is checked with the CPU's own kernels (ATEN_CPU_CAPABILITY is set)",
    ),
]


def _run(tmp_path: Path, compiled: bool) -> dict:
    cfg = compose(
        [
            "+experiment=demo",
            "data.source.synthetic.num_users=40",
            "objective=dynamicpo",
            f"po.compile_objective={str(compiled).lower()}",
            "eval.max_examples=8",
            "eval.splits=[test]",
            "eval.protocols=[ranking]",
            "sft.max_epochs=1",
            "optimized_metric=null",
        ],
        tmp_path / ("compiled" if compiled else "eager"),
    )
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "cache")  # one SFT model for both runs
        for stage in ("sft", "po"):
            cfg[stage].max_train_examples = 16
            cfg[stage].batch_size = 4
    train(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())


def test_compiled_objective_ends_where_eager_does(tmp_path, monkeypatch):
    from recpo.objectives import compiled as compiled_module

    wrapped = []
    original = compiled_module.CompiledObjective.__init__

    def spy(self, objective, *args, **kwargs):
        wrapped.append(type(objective).__name__)
        original(self, objective, *args, **kwargs)

    monkeypatch.setattr(compiled_module.CompiledObjective, "__init__", spy)
    eager = _run(tmp_path, False)
    assert wrapped == []
    compiled = _run(tmp_path, True)
    assert wrapped == ["DynamicPO"]
    assert compiled.keys() == eager.keys()
    for key, value in eager.items():
        assert compiled[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
