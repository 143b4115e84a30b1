"""``logger=wandb`` keeps the CSV log, so ``recpo.report`` draws the training figures of
a sweep logged to W&B (win rate, boundary shares, selected negatives)."""

from __future__ import annotations

import json

from recpo.report.__main__ import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_draws_training_figures_of_a_wandb_sweep(wandb_sweep, tmp_path, capsys):
    sweep = wandb_sweep / "multirun" / "wb"
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # Without the CSV log: "no finished preference job has a training log" (the
    # training table) and "... logged train/rewards/win_rate in logs/po/metrics.csv".
    assert "training log" not in printed, printed
    assert "logs/po/metrics.csv" not in printed, printed
    for kind in ("win_rate", "boundary_shares", "selected_negatives"):
        assert (out / f"{kind}.png").read_bytes()[:8] == PNG_MAGIC, kind
    # The training summary: negatives selected per example over the two jobs' K = 2, 3.
    written = json.loads((out / "report.json").read_text())
    assert "win_rate.png" in json.dumps(written)
    training = (out / "training.csv").read_text()
    assert "selected" in training.splitlines()[0]
