"""Lay out the committed SFT jobs' test evaluations as ``paths.sft_evals`` reads them.

The SFT models are not committed (540 MB each), so a session on a fresh workspace
trains them again under their content keys; this study's SFT stage is deterministic on
this machine (the same val curve and test figures on three runs). Their test
evaluation (about 30 min a model) need not be repeated: this writes
``OUT/<model folder>/<eval-key>/`` with ``metrics.json`` (the SFT job's ``sft:`` results)
and ``test_hits.json`` (its per-row outcomes) for each candidate protocol, the folder
names computed from the study's composed config, so a main job that retrains an SFT
model copies its evaluation from there instead of evaluating it again:

    python experiments/smollm2_study/sft_evals.py OUT paths.data_dir=../shared/data
    experiments/smollm2_study/run.sh main ... paths.sft_evals=OUT

A model folder name that differs from the key recorded in the SFT job stops it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from recpo.config import compose
from recpo.pipeline import WEIGHTS_DIGEST, build_datamodule
from recpo.training.sft_cache import sft_eval_key, sft_folder, write_json

HERE = Path(__file__).resolve().parent
# The SFT jobs' model keys (their logs and sft_model.txt; README.md here).
SFT_KEYS = {"independent": "51d0fa1dff10f9da", "published": "257d8b7f8b6a5314"}
# The evaluated models' weights (recpo.pipeline.weights_digest), which a retrained model
# must match for its evaluation to be copied. The evaluated models' files were lost
# before a digest was taken; a job logs its retrained model's digest ("weights sha256"):
# the first retrain on the CPU kind the SFT jobs ran on (AMD EPYC, avx512_bf16) goes
# here, so later sessions check theirs against it: the session of 2026-12-06 18:22 UTC
# (AMD EPYC, avx512_bf16), whose retrains gave the SFT jobs' four val points again.
SFT_WEIGHTS: dict[str, str] = {
    "independent": "82ef0564a45389af59b2beabe145342a293740fa5240412c534095dfdda08742",
    "published": "7bbf3d025ea681d1e1309bcc3d0f971159b6057f8b255bcaf54fb121aed1574d",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder paths.sft_evals will name")
    parser.add_argument("overrides", nargs="*", help="e.g. paths.data_dir=../shared/data")
    args = parser.parse_args()
    for protocol, key in SFT_KEYS.items():
        job = HERE / "jobs" / "sft" / protocol
        results = json.loads((job / "results.json").read_text())
        cfg = compose(
            ["+experiment=smollm2_study", f"data.candidates={protocol}", *args.overrides],
            output_dir=args.out,
        )
        dm = build_datamodule(cfg, "sft")
        dm.load()
        folder = sft_folder(cfg, dm)
        eval_name = f"eval-{sft_eval_key(cfg, dm.rows_key(tuple(cfg.eval.splits)))}"
        if not folder.name.endswith(f"-{key}"):
            raise SystemExit(
                f"{protocol}: this config's SFT model is {folder.name}, the SFT job's key "
                f"is {key} ({job}): not the same model"
            )
        target = args.out / folder.name / eval_name
        metrics = {k.removeprefix("sft:"): v for k, v in results.items() if k.startswith("sft:")}
        target.mkdir(parents=True, exist_ok=True)
        for hits in sorted((job / "eval" / "sft").glob("*_hits.json")):
            shutil.copy2(hits, target / hits.name)
        (target / WEIGHTS_DIGEST).write_text(SFT_WEIGHTS[protocol] + "\n")
        write_json(target / "metrics.json", metrics)
        print(f"{protocol}: {target} ({len(metrics)} metrics)")


if __name__ == "__main__":
    main()
