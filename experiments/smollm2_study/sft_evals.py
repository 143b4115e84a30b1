"""Lay out the committed SFT jobs' test evaluations as ``paths.sft_evals`` reads them.

The SFT models are not committed (540 MB each), so a session on a fresh workspace
trains them again under their content keys; this study's SFT stage is deterministic on
one CPU kind (the same val curve and test figures on three runs), though not across
kinds. Their test evaluation (15 to 30 min a model) need not be repeated: this writes
``OUT/<model folder>/<eval-key>/`` with ``metrics.json`` (a committed job's ``sft:``
results), ``test_hits.json`` (its per-row outcomes) and the evaluated weights' digest for
each candidate protocol, from the evaluations made on this CPU's kind (``SFT_EVALS``), the
folder names computed from the study's composed config, so a job that retrains an SFT
model copies its evaluation from there instead of evaluating it again, where the weights
are bit-identical:

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
# Per CPU kind, the committed job holding each SFT model's test evaluation (its ``sft:``
# results and eval/sft/*_hits.json) and the evaluated weights' digest
# (recpo.pipeline.weights_digest), which a retrained model must match for the evaluation
# to be copied. Floats differ between CPU kinds in their last bits, so each kind retrains
# its own SFT models (README.md, "Rerun on another CPU kind").
# amd-epyc (avx512_bf16, no AMX): the SFT jobs. Their model files were lost before a
# digest was taken; the digests are those of the first retrain on that CPU kind, the
# session of 2026-12-06 18:22 UTC, whose retrains gave the SFT jobs' four val points again.
# intel-amx (amx_bf16): the models trained and evaluated by the session of 2026-12-06
# 21:29 UTC in its seed-0 DMPO reruns; digests taken from those models' files on
# 2026-12-07.
SFT_EVALS: dict[str, dict[str, tuple[str, str]]] = {
    "amd-epyc": {
        "independent": (
            "jobs/sft/independent",
            "82ef0564a45389af59b2beabe145342a293740fa5240412c534095dfdda08742",
        ),
        "published": (
            "jobs/sft/published",
            "7bbf3d025ea681d1e1309bcc3d0f971159b6057f8b255bcaf54fb121aed1574d",
        ),
    },
    "intel-amx": {
        "independent": (
            "jobs/rerun-amx/independent-dmpo-seed0",
            "572fc01a830bb2d4e70b9f12bf8fc4393847d9bb8f9f2c2187233e79aa12cacc",
        ),
        "published": (
            "jobs/rerun-amx/published-dmpo-seed0",
            "6ddd8feaed1b318c372edd899fe2c7bb82b3eae12d50f8fa4dc5b6724eb0fd6a",
        ),
    },
}


def cpu_kind(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """``intel-amx`` where the CPU flags include ``amx_bf16``, else ``amd-epyc``, the
    kind every other session with native bfloat16 ran on so far."""
    flags = cpuinfo.read_text().split() if cpuinfo.is_file() else []
    return "intel-amx" if "amx_bf16" in flags else "amd-epyc"


def sft_results(job: Path) -> tuple[dict[str, float], list[Path]]:
    """The SFT evaluation a committed job holds: its ``sft:`` results, the prefix removed
    (the evaluation's ``metrics.json``), and its per-row outcome files."""
    results = json.loads((job / "results.json").read_text())
    metrics = {k.removeprefix("sft:"): v for k, v in results.items() if k.startswith("sft:")}
    hits = sorted((job / "eval" / "sft").glob("*_hits.json"))
    if not metrics or not hits:
        raise SystemExit(f"{job}: no SFT evaluation (sft: results and eval/sft/*_hits.json)")
    return metrics, hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder paths.sft_evals will name")
    parser.add_argument("overrides", nargs="*", help="e.g. paths.data_dir=../shared/data")
    parser.add_argument(
        "--cpu",
        choices=sorted(SFT_EVALS),
        default=None,
        help="whose stored evaluations (default: this CPU's kind, from /proc/cpuinfo)",
    )
    args = parser.parse_args()
    kind = args.cpu or cpu_kind()
    for protocol, key in SFT_KEYS.items():
        source, weights = SFT_EVALS[kind][protocol]
        job = HERE / source
        metrics, hits_files = sft_results(job)
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
        target.mkdir(parents=True, exist_ok=True)
        for hits in hits_files:
            shutil.copy2(hits, target / hits.name)
        (target / WEIGHTS_DIGEST).write_text(weights + "\n")
        write_json(target / "metrics.json", metrics)
        print(f"{protocol}: {target} ({len(metrics)} metrics of {source}, {kind})")


if __name__ == "__main__":
    main()
