"""Prompt templates, the datamodule's batch modes, the collator and the title tokenizer."""

from __future__ import annotations

import pytest
import torch

from recpo.data.datamodule import RecDataModule
from recpo.data.prompts import TEMPLATES, build_prompt, domain_templates, draw_templates
from recpo.data.synthetic import read_synthetic
from recpo.errors import DataError
from recpo.models.backbone import load_tokenizer
from recpo.models.tiny import build_tiny_backbone


def test_every_domain_has_paraphrases_with_both_slots():
    for domain, templates in TEMPLATES.items():
        assert len(templates) >= 3, domain
        for t in templates:
            assert "{history}" in t and "{candidates}" in t and t.endswith("Answer:")
    with pytest.raises(DataError, match="unknown prompt domain 'podcast'; built-in domains"):
        domain_templates("podcast")


def test_config_defines_a_domain():
    """data.domain may be a mapping {name, templates}; a built-in name without
    templates keeps the built-in ones."""
    from omegaconf import OmegaConf

    node = OmegaConf.create(
        {"name": "podcast", "templates": ["Heard {history}. Options: {candidates}. Answer: "]}
    )
    assert domain_templates(node) == ["Heard {history}. Options: {candidates}. Answer:"]
    assert domain_templates({"name": "music"}) == TEMPLATES["music"]
    assert domain_templates("music") == TEMPLATES["music"]
    with pytest.raises(DataError, match="non-empty list"):
        domain_templates({"name": "podcast", "templates": "Heard {history} {candidates} Answer:"})
    with pytest.raises(DataError, match=r"must end with 'Answer:'"):
        domain_templates({"name": "podcast", "templates": ["{history} {candidates}."]})


def test_build_prompt_joins_titles():
    p = build_prompt("H: {history}. C: {candidates}. Answer:", ["a", "b"], ["c", "d"])
    assert p == "H: a, b. C: c, d. Answer:"


def test_template_draws_are_seeded_and_use_all_templates():
    a = draw_templates(300, 3, seed=1)
    assert (a == draw_templates(300, 3, seed=1)).all() and set(a.tolist()) == {0, 1, 2}
    assert not (a == draw_templates(300, 3, seed=2)).all()


@pytest.fixture(scope="module")
def dm(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    dm = RecDataModule(
        source={
            "reader": read_synthetic,
            "name": "s",
            "cache_dir": str(cache),
            "synthetic": {"num_users": 80, "num_items": 120},
        },
        num_negatives=5,
        batch_size=4,
        eval_batch_size=3,
    )
    ds = dm.load()
    path = build_tiny_backbone(cache, list(ds.catalog.names.values()), dm.tokenizer_texts())
    dm.set_tokenizer(load_tokenizer(path))
    return dm


def test_title_tokenizer_makes_each_title_one_token(dm):
    tok = dm.collator.tokenizer
    for title in list(dm.catalog.names.values())[:50]:
        ids = tok(" " + title, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, title
        assert tok.decode(ids, skip_special_tokens=True).strip() == title
    # Inside a prompt, each history and candidate title is exactly one token.
    item = dm.dataset_for("train", "eval")[0]
    ids = tok(item.prompt, add_special_tokens=False)["input_ids"]
    title_ids = {tok.convert_tokens_to_ids(t) for t in item.candidates}
    assert title_ids <= set(ids)


def test_modes_give_the_right_answers(dm):
    ex = dm.examples("train")[0]
    name = dm.catalog.name
    sft = dm.dataset_for("train", "sft")[0]
    assert sft.answers == [name(ex.target)] and sft.target_index == 0
    pref = dm.dataset_for("train", "preference")[0]
    assert pref.answers[0] == name(ex.target) and len(pref.answers) == 6
    negs = pref.answers[1:]
    assert len(set(negs)) == 5 and name(ex.target) not in negs and set(negs) <= set(pref.candidates)
    ev = dm.dataset_for("train", "eval")[0]
    assert ev.answers == ev.candidates and ev.answers[ev.target_index] == name(ex.target)
    # Negatives stay fixed across epochs unless resampling is on.
    ds = dm.dataset_for("train", "preference")
    before = [ds[i].answers for i in range(10)]
    ds.set_epoch(3)
    assert [ds[i].answers for i in range(10)] == before
    ds.resample_negatives = True
    ds.set_epoch(4)
    assert [ds[i].answers for i in range(10)] != before


def test_collator_shapes_padding_and_end_token(dm):
    tok = dm.collator.tokenizer
    batch = next(iter(dm.eval_dataloader("val")))
    b, p = batch["prompt_ids"].shape
    assert b == 3 and batch["answer_ids"].shape[:2] == (3, 20)
    # Left padding: real tokens are flush right; the first real token is <s>.
    mask = batch["prompt_mask"]
    assert (mask[:, -1] == 1).all()
    for i in range(b):
        first = int((mask[i] == 0).sum())
        assert batch["prompt_ids"][i, first] == tok.bos_token_id
        assert (batch["prompt_ids"][i, :first] == tok.pad_token_id).all()
    # Answers: the title token then the end token, right-padded.
    lengths = batch["answer_mask"].sum(-1)
    assert (lengths == 2).all()
    assert (batch["answer_ids"][:, :, 1] == tok.eos_token_id).all()
    # Target index points at the target's title token.
    for i in range(b):
        t = batch["answer_ids"][i, batch["target_index"][i], 0]
        assert tok.decode([int(t)]).strip() == batch["targets"][i]


def test_train_loader_preference_mode(dm):
    dm.train_mode = "preference"
    try:
        batch = next(iter(dm.train_dataloader()))
    finally:
        dm.train_mode = "sft"
    assert batch["answer_ids"].shape[:2] == (4, 6)
    assert torch.equal(batch["target_index"], torch.zeros(4, dtype=torch.long))


def test_answer_tokens_match_the_prompt_continuation(dm, tmp_path):
    """Answers are tokenised as they continue "Answer:", also for a BPE tokenizer."""
    from transformers import PreTrainedTokenizerFast

    from recpo.data.batches import Collator
    from recpo.models.tiny import build_bpe_tokenizer

    titles = list(dm.catalog.names.values())[:30]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=build_bpe_tokenizer(titles, dm.tokenizer_texts(), 600),
        eos_token="</s>",
        pad_token="<pad>",
    )
    collator = Collator(tok)
    prompt = dm.dataset_for("train", "eval")[0].prompt
    for title in titles:
        whole = tok(prompt + " " + title, add_special_tokens=False)["input_ids"]
        alone = tok(prompt, add_special_tokens=False)["input_ids"]
        assert whole[len(alone) :] == collator.answer_ids(title)[:-1]
        assert collator.answer_ids(title)[-1] == tok.eos_token_id
