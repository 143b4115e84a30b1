"""evaluate_split: ranking and generation (both matchers) over a split, predictions file.

A tiny Llama with weights set by a formula (the same on every machine and library
version) ranks the candidates; its ``generate`` is scripted per prompt, so the
answers cover every judgement: a hit, a valid miss, an answer valid under one matcher
only (a title inside a longer word, a nested title), two titles, no title, an answer
cut by ``max_new_tokens``. The metrics, their order, the predictions files and the
arguments ``generate`` received are compared with ``fixtures/evaluate_split.json``,
recorded from the implementation before it was split by protocol:
``.venv/bin/python -m tests.evaluation.test_evaluate --record`` (refuses to replace
the fixture unless ``--overwrite`` is given). Metrics are compared within float64
rounding; the predictions (which title ranks first, what was generated) exactly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from recpo.data.batches import Collator, PromptedExample
from recpo.evaluation.evaluate import evaluate_split
from recpo.models.scoring import cache_argument
from recpo.models.tiny import build_title_tokenizer, to_hf_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "evaluate_split.json"

TITLES = ["Air", "Air Supply", "Moby", "Massive Attack", "Portishead", "Björk", "Sade"]
# (target, generated text, candidates): the candidate lists differ, so a model that
# prefers the same titles everywhere still ranks another title first in some rows.
ROWS = [
    ("Moby", " Moby", ["Moby", "Sade", "Portishead", "Björk"]),  # hit under both matchers
    # Nested: substring also finds Air (invalid), strict keeps the longer title (hit).
    ("Air Supply", " Air Supply", ["Air", "Air Supply", "Massive Attack", "Sade"]),
    ("Sade", " Portishead", ["Portishead", "Sade", "Moby", "Air"]),  # valid miss
    ("Björk", " Massive Attack and Moby", ["Björk", "Massive Attack", "Moby", "Air"]),  # two
    ("Air", " Airplane", ["Sade", "Air", "Björk", "Moby"]),  # substring only: a hit
    ("Portishead", " nothing here", ["Air Supply", "Portishead", "Massive Attack", "Air"]),
    # Valid hit; cut to "Massive Attack Massive Attack" by max_new_tokens=2.
    (
        "Massive Attack",
        " Massive Attack " * 2 + "Massive Attack",
        ["Massive Attack", "Moby", "Air", "Portishead"],
    ),
]
EXTRA_WORDS = ["Airplane", "and", "nothing", "here"]
BATCH = 3


def _tokenizer():
    texts = [_prompt(TITLES)] + EXTRA_WORDS
    return to_hf_tokenizer(build_title_tokenizer(TITLES, texts))


def _prompt(candidates: list[str]) -> str:
    return "The user listened to music. Candidates: " + ", ".join(candidates) + ". Answer:"


def _examples() -> list[PromptedExample]:
    out = []
    for row, (target, _, candidates) in enumerate(ROWS):
        prompt = f"User {row}. " + _prompt(candidates)
        out.append(
            PromptedExample(
                prompt,
                candidates,
                target,
                candidates,
                candidates.index(target),
                100 + row,
                row,
                list(range(len(candidates))),
            )
        )
    return out


class ScriptedLlama(LlamaForCausalLM):
    """A Llama whose ``generate`` answers each prompt with a fixed token sequence."""

    def script(self, prompts: dict[tuple[int, ...], list[int]]) -> None:
        self.scripts = prompts
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask, **kwargs):  # noqa: D102
        cache = kwargs.pop(cache_argument(self), None)
        if cache is not None:  # the ranking's prompt keys and values, but the last token's
            assert cache.get_seq_length() == input_ids.shape[1] - 1
        self.calls.append({"batch": list(input_ids.shape), **kwargs})
        assert torch.equal(attention_mask.bool(), input_ids != kwargs["pad_token_id"])
        answers = []
        for ids, mask in zip(input_ids, attention_mask):
            script = self.scripts[tuple(ids[mask.bool()].tolist())]
            answers.append(script[: kwargs["max_new_tokens"]])
        width = max(len(a) for a in answers)
        new = torch.full((len(answers), width), kwargs["pad_token_id"], dtype=torch.long)
        for i, a in enumerate(answers):
            new[i, : len(a)] = torch.tensor(a)
        return torch.cat([input_ids, new], dim=1)


def _model(tok) -> ScriptedLlama:
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = ScriptedLlama(config)
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.named_parameters())):
            # A hash of the position: spread over [-0.5, 0.5), no library RNG involved.
            steps = torch.arange(p.numel(), dtype=torch.float64) + 1000 * i
            noise = torch.frac(torch.sin(steps * 12.9898) * 43758.5453) - 0.5
            p.copy_(noise.reshape(p.shape))
    return model


def _setup():
    tok = _tokenizer()
    collator = Collator(tok)
    examples = _examples()
    batches = [collator(examples[i : i + BATCH]) for i in range(0, len(examples), BATCH)]
    prompts = collator.prompt_ids([e.prompt for e in examples])
    scripts = {}
    for ids, (_, text, _) in zip(prompts, ROWS):
        scripts[tuple(ids)] = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    model = _model(tok)
    model.script(scripts)
    return tok, model, batches


@pytest.fixture(scope="module")
def setup():
    return _setup()


CASES = {
    "both_substring_shared": dict(matcher="substring", scoring="shared"),
    "both_strict_concat": dict(matcher="strict", scoring="concat"),
    "ranking_only": dict(protocols=("ranking",)),
    "generation_only_cut": dict(protocols=("generation",), max_new_tokens=2),
    "generation_strict": dict(protocols=("generation",), matcher="strict", max_new_tokens=4),
}


def run_case(setup, name: str, out_dir: Path) -> dict:
    tok, model, batches = setup
    model.calls = []
    model.train()
    metrics = evaluate_split(model, tok, batches, "val", out_dir=out_dir, **CASES[name])
    assert model.training  # the mode it had before
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == ["val_predictions.jsonl"], files
    return {
        "metrics": metrics,
        "metric_order": list(metrics),
        "predictions": (out_dir / "val_predictions.jsonl").read_text(encoding="utf-8"),
        "generate_calls": model.calls,
    }


def _expected() -> dict:
    if not FIXTURE.is_file():
        pytest.fail(f"{FIXTURE} missing: record it with python -m tests.evaluation.test_evaluate")
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.mark.recorded
@pytest.mark.parametrize("name", CASES)
def test_same_metrics_and_predictions_as_recorded(setup, name, tmp_path):
    got = json.loads(json.dumps(run_case(setup, name, tmp_path / name)))
    want = _expected()[name]
    assert got["metric_order"] == want["metric_order"]
    # Ratios and NDCG sums are floats: their last bits depend on the CPU's kernels.
    assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-12, abs=1e-14)
    assert got["predictions"] == want["predictions"]
    assert got["generate_calls"] == want["generate_calls"]


def test_recorded_cases_judge_every_kind_of_answer():
    """The fixture is not vacuous: hand-checked figures for the scripted answers."""
    want = _expected()
    sub = want["both_substring_shared"]["metrics"]
    # Hits: Moby, Airplane (Air inside a word), Massive Attack. Valid: those + Portishead.
    assert sub["val/gen_hr@1"] == pytest.approx(3 / 7)
    assert sub["val/valid_ratio"] == pytest.approx(4 / 7)
    # Strict: Moby, Air Supply (the nested Air does not count), Massive Attack hit;
    # Portishead valid; Airplane names no title.
    assert sub["val/gen_hr@1_strict"] == pytest.approx(3 / 7)
    assert sub["val/valid_ratio_strict"] == pytest.approx(4 / 7)
    assert sub["val/nested_rows"] == 2  # rows 1 and 5 show Air and Air Supply
    assert sub["val/rows"] == 7
    strict = want["both_strict_concat"]["metrics"]
    assert strict["val/gen_hr@1"] == sub["val/gen_hr@1_strict"]
    assert strict["val/gen_hr@1_substring"] == sub["val/gen_hr@1"]
    # Both scoring methods rank alike; the model ranks the target first in some rows only.
    for key in ("hr@1", "hr@5", "ndcg@5"):
        assert strict[f"val/{key}"] == sub[f"val/{key}"]
    lines = [json.loads(x) for x in want["both_substring_shared"]["predictions"].splitlines()]
    ranked_first = [x["ranked_top"] == x["target"] for x in lines]
    assert 0 < sum(ranked_first) < 7
    assert sub["val/hr@1"] == pytest.approx(sum(ranked_first) / 7)
    assert sub["val/hr@5"] == 1.0  # four candidates a row
    assert [x["row"] for x in lines] == [100 + i for i in range(7)]
    assert [(x["valid"], x["hit"]) for x in lines] == [
        (True, True),
        (False, False),
        (True, False),
        (False, False),
        (True, True),
        (False, False),
        (True, True),
    ]
    cut = want["generation_only_cut"]
    answers = [json.loads(x)["answer"] for x in cut["predictions"].splitlines()]
    assert answers[3].split() == ["Massive", "Attack", "and"]  # now one title: valid
    assert answers[6].split() == ["Massive", "Attack", "Massive", "Attack"]
    assert cut["metrics"]["val/valid_ratio"] == pytest.approx(5 / 7)
    assert "ranked_top" not in json.loads(cut["predictions"].splitlines()[0])


def test_unknown_matcher_is_refused(setup):
    tok, model, batches = setup
    with pytest.raises(ValueError, match="eval.matcher must be one of"):
        evaluate_split(model, tok, batches, "val", matcher="exact")


def test_model_mode_is_restored_when_generation_fails(setup):
    tok, model, batches = setup

    def fail(**kwargs):
        raise RuntimeError("generation failed")

    model.train()
    model.generate = fail
    try:
        with pytest.raises(RuntimeError, match="generation failed"):
            evaluate_split(model, tok, batches, "val")
    finally:
        del model.generate
    assert model.training


def test_no_file_without_out_dir(setup, tmp_path, monkeypatch):
    tok, model, batches = setup
    monkeypatch.chdir(tmp_path)
    metrics = evaluate_split(model, tok, batches, "test", protocols=("ranking",))
    assert metrics["test/rows"] == 7 and list(tmp_path.iterdir()) == []


def stop_in_second_batch(setup, out: Path, **kwargs) -> None:
    """Run ``evaluate_split`` into ``out`` and stop it in its second batch."""
    tok, model, batches = setup
    real = model.generate

    def generate(**kw):
        if len(model.calls) == 1:
            raise KeyboardInterrupt
        return real(**kw)

    model.calls = []
    model.generate = generate
    try:
        with pytest.raises(KeyboardInterrupt):
            evaluate_split(model, tok, batches, "val", out_dir=out, **kwargs)
    finally:
        del model.generate


def computed_batches(setup, out: Path, **kwargs) -> int:
    """Run ``evaluate_split`` to the end; the number of batches it computed."""
    tok, model, batches = setup
    model.calls = []
    evaluate_split(model, tok, batches, "val", out_dir=out, **kwargs)
    return len(model.calls)


def test_stopped_evaluation_resumes_after_the_last_finished_batch(setup, tmp_path):
    """A run stopped in its second batch leaves the first in the progress file; the
    next run computes only the remaining batches and gives the uninterrupted run's
    metrics and predictions, then removes the progress file."""
    tok, model, batches = setup
    whole = evaluate_split(model, tok, batches, "val", out_dir=tmp_path / "whole")
    want = (tmp_path / "whole" / "val_predictions.jsonl").read_text(encoding="utf-8")
    out = tmp_path / "stopped"
    stop_in_second_batch(setup, out)
    lines = (out / "val_progress.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2  # the header and the first batch
    model.calls = []
    assert evaluate_split(model, tok, batches, "val", out_dir=out) == whole
    assert len(model.calls) == len(batches) - 1
    assert (out / "val_predictions.jsonl").read_text(encoding="utf-8") == want
    assert sorted(p.name for p in out.iterdir()) == ["val_predictions.jsonl"]


def test_progress_is_reused_only_for_the_same_settings_and_rows(setup, tmp_path):
    _, _, batches = setup
    path = tmp_path / "val_progress.jsonl"
    # Another matcher: every batch is computed again.
    stop_in_second_batch(setup, tmp_path)
    assert computed_batches(setup, tmp_path, matcher="strict") == len(batches)
    # Other rows in the stored batch: computed again.
    stop_in_second_batch(setup, tmp_path)
    header, first = path.read_text(encoding="utf-8").splitlines()
    changed = json.loads(first)
    changed["rows"] = [r + 1000 for r in changed["rows"]]
    path.write_text(header + "\n" + json.dumps(changed) + "\n", encoding="utf-8")
    assert computed_batches(setup, tmp_path) == len(batches)
    # A batch line cut short (the run was killed while writing it): computed again.
    stop_in_second_batch(setup, tmp_path)
    path.write_text(path.read_text(encoding="utf-8")[:-20], encoding="utf-8")
    assert computed_batches(setup, tmp_path) == len(batches)
    # Other weights (a different model in the same folder): computed again.
    stop_in_second_batch(setup, tmp_path)
    first_param = next(setup[1].parameters())
    kept = first_param.detach().clone()
    with torch.no_grad():
        first_param.add_(1.0)
    try:
        assert computed_batches(setup, tmp_path) == len(batches)
    finally:
        with torch.no_grad():
            first_param.copy_(kept)
    # The same settings and rows: the stored batch is reused.
    stop_in_second_batch(setup, tmp_path)
    assert computed_batches(setup, tmp_path) == len(batches) - 1


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the fixture")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing fixture")
    args = parser.parse_args()
    if not args.record:
        parser.error("nothing to do: pass --record")
    if FIXTURE.exists() and not args.overwrite:
        raise SystemExit(f"{FIXTURE} exists: pass --overwrite to replace it")
    state = _setup()
    with tempfile.TemporaryDirectory() as tmp:
        record = {name: run_case(state, name, Path(tmp) / name) for name in CASES}
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
