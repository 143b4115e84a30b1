"""Every config value is checked before any work (recpo.schema, recpo.settings).

Each bad value of :data:`BAD` is run through the real entry point (``recpo.train``'s
Hydra ``main``, in one subprocess that calls it once per value so that the imports are
paid once): each must end with exit code 2 and one ``config error:`` line naming its
key, and afterwards no SFT folder, checkpoint or W&B run may exist. One value also
runs as its own ``python -m recpo.train`` process, to see the line and the exit code a
user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recpo.errors import ConfigError
from recpo.schema import check_config
from recpo.settings import AT_LEAST_ONE, SHARE, Checked, Rule, setting
from tests.conftest import REPO, run_train

# (override, the key its message must name), at least one value per node.
BAD: list[tuple[str, str]] = [
    ("objective.gamma=abc", "objective.gamma"),
    ("objective.gamma=nan", "objective.gamma"),
    ("objective.alpha=-1", "objective.alpha"),
    ("objective.alpha=1.5", "objective.alpha"),
    ("objective.beta=0", "objective.beta"),
    ("objective.stage1=maybe", "objective.stage1"),
    ("objective.dynamic_beta=2", "objective.dynamic_beta"),
    ("objective.solver=kmeans", "objective.solver"),
    ("objective.lloyd_iters=0", "objective.lloyd_iters"),
    ("+objective.delta=1", "objective.delta"),
    ("objective=topk objective.k=16", "objective.k"),
    ("objective=dpo", "po.num_negatives"),
    ("po.num_negatives=25", "po.num_negatives"),
    ("po.num_negatives=0", "po.num_negatives"),
    ("po.lr=-1e-5", "po.lr"),
    ("po.batch_size=0", "po.batch_size"),
    ("po.max_epochs=0", "po.max_epochs"),
    ("po.reference=frozen", "po.reference"),
    ("po.resample_negatives=sometimes", "po.resample_negatives"),
    ("po.warmup_ratio=1", "po.warmup_ratio"),
    ("sft.batch_size=0", "sft.batch_size"),
    ("sft.lr=0", "sft.lr"),
    ("sft.max_epochs=1.5", "sft.max_epochs"),
    ("sft.max_train_examples=0", "sft.max_train_examples"),
    ("sft.optimizer._target_=torch.optim.Adamm", "sft.optimizer._target_"),
    ("data.candidates=random", "data.candidates"),
    ("data.num_candidates=1", "data.num_candidates"),
    ("data.max_prompt_length=0", "data.max_prompt_length"),
    ("data.source.min_history=0", "data.source.min_history"),
    ("data.source.reader._target_=recpo.data.formats.nope.read", "data.source.reader"),
    ("eval.splits=[dev]", "eval.splits"),
    ("eval.protocols=[ranking,beam]", "eval.protocols"),
    ("eval.matcher=fuzzy", "eval.matcher"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens"),
    ("eval.max_examples=0", "eval.max_examples"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ("trainer.num_nodes=0", "trainer.num_nodes"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
    ("+trainer.acumulate=2", "trainer.acumulate"),
    ("runtime.eval_batch_size=0", "runtime.eval_batch_size"),
    ("scoring=fast", "scoring"),
    ("stages=[po,sft]", "stages"),
    ("seed=abc", "seed"),
]

DRIVER = textwrap.dedent(
    """
    import json, sys
    from recpo.train import main

    base, cases, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    for i, overrides in enumerate(cases):
        sys.argv = ["recpo.train", *base, *overrides, f"hydra.run.dir={out}/run{i}"]
        print(f"@@case {i}", flush=True)
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code
        print(f"@@exit {i} {code}", flush=True)
    """
)


def _run_cases(tmp_path: Path, cases: list[list[str]]) -> list[tuple[int, list[str]]]:
    """Run each case's overrides through ``main``; (exit code, the error lines) each."""
    base = ["+experiment=demo", f"paths.cache_dir={tmp_path / 'cache'}", "logger=[csv,wandb]"]
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wandb"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(base), json.dumps(cases), str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream: each case's lines stay between its markers
        text=True,
        timeout=600,
        env=env,
    )
    results, lines, code = [], [], None
    for line in proc.stdout.splitlines():
        if line.startswith("@@case"):
            lines = []
        elif line.startswith("@@exit"):
            code = line.split()[-1]
            results.append((int(code) if code.isdigit() else code, lines))
        elif "ERROR" in line or "Traceback" in line or "Error" in line:
            lines.append(line)
    assert len(results) == len(cases), proc.stdout[-3000:]
    return results


def test_every_bad_value_ends_in_one_line_and_exit_2_before_any_work(tmp_path):
    results = _run_cases(tmp_path, [override.split() for override, _ in BAD])
    for (override, key), (code, lines) in zip(BAD, results):
        assert code == 2, (override, code, lines)
        assert len(lines) == 1 and "config error: " in lines[0], (override, lines)
        message = lines[0].split("config error: ", 1)[1]
        assert message.startswith(key) or f" {key}=" in message, (override, message)
    assert not (tmp_path / "cache" / "sft").exists()
    assert not list(tmp_path.rglob("*.ckpt"))
    assert not list(tmp_path.rglob("run-*")), "a W&B run was created"
    assert not list(tmp_path.rglob("metrics.csv"))


def test_the_cli_line_names_key_value_and_what_is_allowed(tmp_path):
    proc = run_train(["+experiment=demo", "objective.gamma=abc", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config error: objective.gamma='abc': expected a finite real number" in (
        proc.stdout + proc.stderr
    )
    assert "Traceback" not in proc.stderr
    # Only what Hydra writes when a run starts: its own config copy and the log.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "train.log"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["objective=topk", "objective.k=15"],
        ["objective=dpo", "po.num_negatives=1"],
        ["objective=mppo"],
        ["objective.alpha=0", "objective.gamma=-2"],
        ["stages=[sft]", "objective.alpha=5"],  # no po stage: the objective is not used
        ["trainer.gradient_clip_val=null", "sft.max_train_examples=10"],
    ],
)
def test_good_values_pass(overrides):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", ["+experiment=demo", *overrides], return_hydra_config=False)
    OmegaConf.update(cfg, "paths.output_dir", "unused", force_add=True)
    check_config(cfg)


def test_every_committed_experiment_passes():
    """No shipped experiment is refused (paths that need a Hydra run are set by hand)."""
    from hydra import compose, initialize_config_dir

    from recpo.experiment_configs import register
    from tests.conftest import CONF

    files = [p.stem for p in (CONF / "experiment").glob("*.yaml") if p.stem[0] != "_"]
    names = sorted([*files, *register()])
    checked = 0
    for name in names:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", [f"+experiment={name}"])
        if OmegaConf.select(cfg, "task._target_") != "recpo.pipeline.run_llm":
            continue
        OmegaConf.update(cfg, "paths.output_dir", "unused", force_add=True)
        check_config(cfg)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize(
    ("value", "allowed"),
    [(0.0, True), (0.999, True), (1.0, False), (-0.001, False)],
)
def test_a_share_rule_by_hand(value, allowed):
    assert (Rule(**SHARE).problem(value) is None) is allowed
    assert Rule(**SHARE).describe() == "a value in [0, 1)"


def test_a_settings_dataclass_checks_types_before_ranges():
    from dataclasses import dataclass

    @dataclass(frozen=True, kw_only=True)
    class Example(Checked):
        steps: int = setting(1, **AT_LEAST_ONE)
        flag: bool = False
        names: list[str] = setting((), choices=("a", "b"))

    Example(steps=3, flag=True, names=["a", "b"])
    for kwargs, message in [
        ({"steps": 0}, "steps=0: expected a value >= 1"),
        ({"steps": 2.0}, "steps=2.0: expected an integer"),
        ({"steps": True}, "steps=True: expected an integer"),
        ({"flag": 1}, "flag=1: expected true or false"),
        ({"names": ["a", "c"]}, "names=['a', 'c']: expected each of ['a', 'b']"),
        ({"names": "a"}, "names='a': expected a list"),
    ]:
        with pytest.raises(ConfigError) as err:
            Example(**kwargs)
        assert str(err.value) == message
