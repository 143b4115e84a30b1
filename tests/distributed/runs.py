"""What the distributed pipeline tests share: a small demo pipeline, and one-process
evaluation of the models a multi-rank run saved."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from recpo.evaluation.evaluate import evaluate_model
from recpo.models.backbone import load_backbone, load_finetuned
from recpo.pipeline import build_datamodule
from tests.pipeline.test_sweeps import SMALL

# SFT -> PO -> evaluation on the demo data; 16 evaluation rows in batches of 3, so the
# ranks evaluate different numbers of rows; the PO model saved for re-evaluation.
PIPELINE = [
    *[a for a in SMALL if not a.startswith("eval.max_examples")],
    "stages=[sft,po]",
    "eval.max_examples=16",
    "runtime.eval_batch_size=3",
    "po.save_model=true",
    "trainer.precision=32-true",
]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def predictions(folder: Path) -> dict[str, list[dict]]:
    return {
        p.name: [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted(folder.glob("*_predictions.jsonl"))
    }


def reevaluate_in_one_process(run: Path, tmp: Path) -> dict[str, dict[str, float]]:
    """Evaluate the SFT and PO models a run saved (full fine-tuning) again in this one
    process, predictions into ``tmp/<stage>``; returns each stage's metrics."""
    cfg = OmegaConf.load(run / "config.yaml")
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
        cfg.trainer.devices = 1
        cfg.trainer.strategy = "auto"
    dm = build_datamodule(cfg)
    ds = dm.load()
    base = load_backbone(
        cfg.backbone,
        model_dir=None,
        cache_dir=cfg.paths.cache_dir,
        titles=list(ds.catalog.names.values()),
        texts=dm.tokenizer_texts(),
    )
    dm.set_tokenizer(base.tokenizer)
    sft = Path((run / "sft_model.txt").read_text().strip())
    out = {}
    for stage, folder in (("sft", sft), ("po", run / "po_model")):
        model = load_finetuned(cfg.backbone, folder, base, fresh_adapter=False)
        out[stage] = evaluate_model(cfg, model.model, model.tokenizer, dm, tmp / stage)
    return out
