"""The SFT content keys: which overrides must change them and which must not.

``sft_key(cfg, rows)`` keys a stored SFT model, ``sft_eval_key(cfg, rows)`` its
stored evaluation; ``rows`` is the content key of the rows they were computed on
(``RecDataModule.rows_key``). The settings cases hold ``rows`` fixed; the rows cases
build the real data modules (no training).
"""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from recpo.pipeline import build_datamodule
from recpo.training.sft_cache import effective_batch_size, sft_eval_key, sft_key
from tests.conftest import CONF, compose, write_llara

BASE = ["+experiment=lastfm_dynamicpo"]
ROWS = "rows-of-the-data"

# Each of these makes a different SFT model.
SFT_CHANGES = [
    # every trainer limit (a smoke test must never be reused by a full run)
    "trainer.limit_train_batches=0.1",
    "trainer.limit_val_batches=0.5",
    "trainer.limit_test_batches=0.5",
    "trainer.max_steps=3",
    "trainer.max_time=00:00:10:00",
    "trainer.fast_dev_run=true",
    "trainer.overfit_batches=2",
    "++trainer.limit_train_batches=0.1",
    "+trainer.min_steps=5",  # a Trainer argument the config does not list
    # the effective batch size and the numerics
    "trainer.devices=4",
    "trainer.num_nodes=2",
    "trainer.accumulate_grad_batches=2",
    "sft.batch_size=8",
    "trainer.precision=bf16-mixed",
    "trainer.accelerator=gpu",
    "trainer=ddp",
    "trainer=deepspeed_zero2",
    "trainer.gradient_clip_val=0.5",
    "trainer.val_check_interval=0.5",
    "trainer.check_val_every_n_epoch=2",
    "trainer.deterministic=true",
    # the SFT stage
    "sft.max_epochs=3",
    "sft.lr=5e-4",
    "sft.max_train_examples=100",
    "sft.warmup_ratio=0.1",
    "sft.optimizer.weight_decay=0.01",
    "sft.scheduler._target_=transformers.get_linear_schedule_with_warmup",
    # the backbone
    "backbone=tiny_bpe",
    "backbone.hidden_size=64",
    "backbone.init_seed=1",
    "backbone.finetune=lora",
    "backbone.lora.r=4",
    # the data
    "data=steam",
    "data.source.min_history=2",
    "data.source.clean.max_chars=40",
    "data.domain=item",
    "data.num_candidates=10",
    "data.max_prompt_length=512",
    # the rest
    "seed=1",
    "scoring=concat",
]

# None of these changes what SFT learns.
SFT_SAME = [
    "runtime.torch_threads=2",
    "runtime.num_workers=2",
    "runtime.eval_batch_size=8",
    "runtime.trainer.log_every_n_steps=1",
    "runtime.trainer.enable_model_summary=true",
    "paths.data_dir=/elsewhere",
    "paths.cache_dir=/other",
    "paths.sft_dir=/stored",
    "paths.sft_evals=/stored-evals",
    "paths.model_dir=/models",
    "sft.reuse=false",
    "logger=wandb",
    "callbacks.progress.refresh_rate=1",
    "task_name=other",
    "stages=[sft]",
    "optimized_metric=val/ndcg@5",
    "objective=dmpo",
    "po.lr=0.5",
    "po.max_epochs=9",
    "po.batch_size=4",
    "po.num_negatives=5",
    "po.resample_negatives=true",
    "po.max_train_examples=10",
    "po.reference=precompute",
    "po.save_model=true",
    "po.seed=1",
    "eval.matcher=strict",
    "eval.max_new_tokens=5",
    "eval.protocols=[ranking]",
    "eval.splits=[test]",
]

# The stored SFT evaluation: the data and what is measured.
EVAL_CHANGES = [
    "eval.matcher=strict",
    "eval.max_new_tokens=5",
    "eval.protocols=[ranking]",
    "eval.splits=[test]",
    "scoring=concat",
    "data.domain=item",
    "data.num_candidates=10",
    "data.max_prompt_length=512",
    "data.source.min_history=2",
    "data=steam",
]
EVAL_SAME = [
    "paths.sft_evals=/stored-evals",
    "runtime.eval_batch_size=8",
    "runtime.torch_threads=2",
    "paths.data_dir=/elsewhere",
    "paths.cache_dir=/other",
    "sft.reuse=false",
    "po.num_negatives=5",
    "logger=wandb",
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """``override -> (sft_key, sft_eval_key)`` with the rows held fixed."""
    tmp = tmp_path_factory.mktemp("keys")
    cache: dict[str, tuple[str, str]] = {}

    def get(*overrides: str) -> tuple[str, str]:
        name = " ".join(overrides)
        if name not in cache:
            cfg = compose([*BASE, *overrides], tmp)
            cache[name] = (sft_key(cfg, ROWS), sft_eval_key(cfg, ROWS))
        return cache[name]

    return get


@pytest.mark.parametrize("override", SFT_CHANGES)
def test_override_changes_the_sft_key(keys, override):
    assert keys(override)[0] != keys()[0]


@pytest.mark.parametrize("override", SFT_SAME)
def test_override_keeps_the_sft_key(keys, override):
    assert keys(override)[0] == keys()[0]


@pytest.mark.parametrize("override", EVAL_CHANGES)
def test_override_changes_the_sft_eval_key(keys, override):
    assert keys(override)[1] != keys()[1]


@pytest.mark.parametrize("override", EVAL_SAME)
def test_override_keeps_the_sft_eval_key(keys, override):
    assert keys(override)[1] == keys()[1]


def test_the_data_reader_is_not_part_of_the_keys(tmp_path):
    """data.source.reader names code, data.source.format the format: SFT models stored
    before the reader key existed keep their keys, and another format changes them."""
    from omegaconf import open_dict

    cfg = compose(BASE, tmp_path)
    keys = sft_key(cfg, ROWS), sft_eval_key(cfg, ROWS)
    with open_dict(cfg):
        del cfg.data.source["reader"]
    assert (sft_key(cfg, ROWS), sft_eval_key(cfg, ROWS)) == keys
    cfg.data.source.format = "raw"
    assert sft_key(cfg, ROWS) != keys[0]


def test_the_rows_are_part_of_both_keys(tmp_path):
    cfg = compose(BASE, tmp_path)
    assert sft_key(cfg, "a") != sft_key(cfg, "b")
    assert sft_eval_key(cfg, "a") != sft_eval_key(cfg, "b")


def test_experiments_of_a_dataset_share_one_sft_model(tmp_path):
    """Every `+experiment=lastfm_<objective>` and the studies' `lastfm_study` train
    the SFT of `lastfm_sft` (the other datasets' experiments are built the same way);
    the SmolLM2 study trains SFT with the settings of experiments/lastfm_smollm2's
    command (on the same rows, the same key)."""
    from recpo.experiment_configs import register

    baselines = {p.stem for p in (CONF / "baseline").glob("*.yaml")}
    objectives = [p.stem for p in (CONF / "objective").glob("*.yaml")]
    composed = [n for n in register() if n.startswith("lastfm_")]
    names = sorted(
        [n for n in composed if n.removeprefix("lastfm_") not in baselines]
        + ["lastfm_sft", "lastfm_study"]
    )
    # sft, po (the objective left to the group), one per objective, the studies' settings
    assert len(names) == len(objectives) + 3, names
    found = {sft_key(compose([f"+experiment={n}"], tmp_path), ROWS) for n in names}
    assert len(found) == 1, names
    smollm2_sft = [
        "+experiment=lastfm_sft",
        "backbone=smollm2_135m",
        "sft.batch_size=4",
        "sft.max_epochs=1",
        "sft.max_train_examples=1000",
        "trainer.limit_val_batches=2",
    ]
    study = compose(["+experiment=lastfm_smollm2_study", "seed=0"], tmp_path)
    assert sft_key(study, ROWS) == sft_key(compose(smollm2_sft, tmp_path), ROWS)
    assert sft_key(study, ROWS) not in found


def test_trainer_limits_are_present_with_defaults(tmp_path):
    """The limits are keys of conf/trainer, so they are hashed and a plain
    `trainer.max_steps=3` sets them; `+trainer.max_steps=3` is refused by Hydra."""
    cfg = compose(BASE, tmp_path)
    for key in (
        "limit_train_batches",
        "limit_val_batches",
        "limit_test_batches",
        "limit_predict_batches",
        "max_steps",
        "max_time",
        "fast_dev_run",
        "overfit_batches",
    ):
        assert key in cfg.trainer, key
    with pytest.raises(ConfigCompositionException, match="already at 'trainer.max_steps'"):
        compose([*BASE, "+trainer.max_steps=3"], tmp_path)


def test_effective_batch_size(tmp_path):
    cfg = compose([*BASE, "trainer=deepspeed_zero2", "sft.batch_size=4"], tmp_path)
    assert effective_batch_size(cfg, "sft") == 4 * 8 * 4  # devices x batch x accumulation
    cfg = compose([*BASE, "trainer.devices=auto"], tmp_path)
    assert effective_batch_size(cfg, "sft") == "1xautox32x1"


def test_backbones_set_their_learning_rates(tmp_path):
    tiny = compose([], tmp_path)
    assert (tiny.sft.lr, tiny.po.lr, tiny.runtime.torch_threads) == (1e-3, 1e-4, 1)
    assert tiny.sft.optimizer.lr == tiny.sft.lr and tiny.po.optimizer.lr == tiny.po.lr
    llama = compose(["backbone=qwen2_5_7b_instruct"], tmp_path)
    assert (llama.sft.lr, llama.po.lr, llama.runtime.torch_threads) == (1e-4, 1e-5, None)
    assert compose(["backbone=tiny", "sft.lr=0.5"], tmp_path).sft.optimizer.lr == 0.5


# ---------------------------------------------------------------- the rows

SMALL = ["data.source.synthetic.num_users=40"]


def _rows(overrides: list[str], tmp_path, splits=("train", "val")) -> str:
    cfg = compose([*SMALL, *overrides], tmp_path)
    return build_datamodule(cfg).rows_key(splits)


@pytest.mark.parametrize(
    "override",
    [
        "eval.max_examples=8",  # the validation rows that pick the best SFT epoch
        "sft.max_train_examples=20",
        "data.source.synthetic.num_users=50",
        "data.source.min_history=4",
        "data.num_candidates=10 po.num_negatives=5",
        "seed=1",
    ],
)
def test_override_changes_the_sft_rows(tmp_path, override):
    assert _rows(override.split(), tmp_path) != _rows([], tmp_path)


@pytest.mark.parametrize(
    "override", ["po.max_train_examples=10", "runtime.eval_batch_size=8", "data.domain=music"]
)
def test_override_keeps_the_sft_rows(tmp_path, override):
    # (data.domain changes the prompts, not the rows: the data node is hashed for it)
    assert _rows([override], tmp_path) == _rows([], tmp_path)


def test_eval_rows_follow_the_evaluation_cap(tmp_path):
    splits = ("val", "test")
    assert _rows(["eval.max_examples=8"], tmp_path, splits) != _rows([], tmp_path, splits)
    assert _rows(["sft.max_train_examples=20"], tmp_path, splits) == _rows([], tmp_path, splits)


def test_same_files_elsewhere_same_key_other_files_other_key(tmp_path):
    """Where the files are does not matter, what they hold does."""
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_llara(tmp_path / name / "toy", seed=seed)
    overrides = [
        "data=lastfm",
        "data.source.folder=toy",
        "data.source.padding_id=40",
        "data.source.allow_pickle=false",
        "data.num_candidates=10",
        "po.num_negatives=5",
    ]

    def key(name: str) -> str:
        cfg = compose([*overrides, f"paths.data_dir={tmp_path / name}"], tmp_path / name)
        return sft_key(cfg, build_datamodule(cfg).rows_key(("train", "val")))

    assert key("a") == key("b")
    assert key("a") != key("c")


def test_po_stage_serves_the_same_rows_with_its_own_settings(tmp_path):
    from recpo.pipeline import stage_data_args

    cfg = compose([*SMALL, "po.max_train_examples=10", "po.num_negatives=3"], tmp_path)
    sft = build_datamodule(cfg)
    po = sft.for_training(**stage_data_args(cfg, "po"))
    assert (sft.train_mode, po.train_mode) == ("sft", "preference")
    assert po.examples("train") == sft.examples("train")[:10]
    assert po.examples("val") is sft.examples("val")
    assert po.dataset is sft.dataset and po.num_negatives == 3
    assert (sft.batch_size, po.batch_size) == (32, 32) and sft.max_train_examples is None
    with pytest.raises(ValueError, match="po.num_negatives must be in 1..19"):
        sft.for_training("preference", 4, num_negatives=20)


def test_po_seeds_share_the_sft_model_and_the_evaluated_rows(tmp_path):
    """po.seed draws the PO stage's negatives, row order and training templates anew;
    the SFT key, the candidate lists and the val/test prompts stay the run seed's."""
    from recpo.pipeline import stage_data_args

    def po_data(po_seed: int | None):
        extra = [] if po_seed is None else [f"po.seed={po_seed}"]
        cfg = compose([*SMALL, "po.num_negatives=3", *extra], tmp_path)
        sft = build_datamodule(cfg)
        return cfg, sft, sft.for_training(**stage_data_args(cfg, "po"))

    cfg0, sft0, po0 = po_data(None)
    assert cfg0.po.seed == cfg0.seed == 0 and po0.train_seed == sft0.train_seed == 0
    cfg1, sft1, po1 = po_data(1)
    rows = sft0.rows_key(("train", "val"))
    assert sft_key(cfg1, sft1.rows_key(("train", "val"))) == sft_key(cfg0, rows)
    assert (sft1.train_seed, po1.train_seed) == (0, 1)
    for split in ("val", "test"):
        a, b = po0.dataset_for(split, "eval"), po1.dataset_for(split, "eval")
        assert [a[i].prompt for i in range(len(a))] == [b[i].prompt for i in range(len(b))]
    a, b = po0.dataset_for("train", "preference"), po1.dataset_for("train", "preference")
    assert len(a) == len(b)
    assert any(a[i].answers != b[i].answers for i in range(len(a)))  # other negatives
    assert all(a[i].target == b[i].target for i in range(len(a)))
