"""Examples of one split as prompts, and the collator that turns them into token tensors.

Three kinds of batch come out of one collator, all with the prompt once and a
``(B, N, A)`` block of answers:

* ``sft``: N = 1, the target title;
* ``preference``: N = 1 + K, the target first, then K negatives drawn from the 19
  non-target candidates (seeded; fixed across epochs unless ``resample_negatives``);
* ``eval``: N = 20, the candidates in display order, with ``target_index``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from recpo.data.candidates import negative_choices
from recpo.data.prompts import ANSWER_SUFFIX, answer_text, build_prompt, draw_templates
from recpo.data.records import Example, ItemCatalog

MODES = ("sft", "preference", "eval")


@dataclass
class PromptedExample:
    """One example with its prompt text and the titles to score."""

    prompt: str
    answers: list[
        str
    ]  # titles: target first (sft / preference) or candidates in display order (eval)
    target: str
    candidates: list[str]
    target_index: int  # index of the target in ``answers``
    row: int
    index: int = 0  # position in the split (keys precomputed reference log-probs)
    positions: list[int] | None = None  # position of each answer in ``candidates``


class PromptDataset(Dataset):
    """Examples of one split rendered as prompts, for one batch mode."""

    def __init__(
        self,
        examples: list[Example],
        catalog: ItemCatalog,
        templates: list[str],
        mode: str,
        seed: int,
        num_negatives: int = 15,
        resample_negatives: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.examples = examples
        self.catalog = catalog
        self.templates = templates
        self.mode = mode
        self.seed = seed
        self.num_negatives = num_negatives
        self.resample_negatives = resample_negatives
        self.template_index = draw_templates(len(examples), len(templates), seed)
        self.epoch = 0
        self._negatives = self._draw_negatives() if mode == "preference" else None

    def _draw_negatives(self) -> np.ndarray:
        pool = min(len(ex.candidates) for ex in self.examples) - 1 if self.examples else 19
        epoch = self.epoch if self.resample_negatives else None
        return negative_choices(len(self.examples), self.num_negatives, pool, self.seed, epoch)

    def set_epoch(self, epoch: int) -> None:
        """Redraw the negatives for ``epoch`` when resampling is on."""
        if self.epoch != epoch and self.resample_negatives and self.mode == "preference":
            self.epoch = epoch
            self._negatives = self._draw_negatives()
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> PromptedExample:
        ex = self.examples[i]
        name = self.catalog.name
        candidates = [name(c) for c in ex.candidates]
        prompt = build_prompt(
            self.templates[self.template_index[i]], [name(h) for h in ex.history], candidates
        )
        target = name(ex.target)
        target_pos = ex.candidates.index(ex.target)
        if self.mode == "eval":
            positions, target_index = list(range(len(candidates))), target_pos
        elif self.mode == "sft":
            positions, target_index = [target_pos], 0
        else:
            others = [j for j in range(len(candidates)) if j != target_pos]
            positions, target_index = [target_pos] + [others[j] for j in self._negatives[i]], 0
        answers = [candidates[j] for j in positions]
        return PromptedExample(
            prompt, answers, target, candidates, target_index, ex.row, i, positions
        )


class Collator:
    """Tokenises prompts (left-padded) and answers (right-padded, end token appended).

    ``prompt_bos``: start every prompt with the tokenizer's bos token (when it has
    one). Off for models whose bos token is not a document start (SmolLM2's is
    the chat-turn opener ``<|im_start|>``). Masks mark real tokens by position, so a
    pad id equal to the end token's (SmolLM2, Llama-3) never hides an end token.
    """

    def __init__(self, tokenizer: Any, max_prompt_length: int = 1024, prompt_bos: bool = True):
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.prompt_bos = prompt_bos
        self._answer_cache: dict[str, list[int]] = {}
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.truncated = 0

    def answer_ids(self, title: str) -> list[int]:
        """Token ids of the answer as they follow "Answer:" in a prompt, plus the end token.

        The answer is tokenised after the prompt's last word and that word's tokens are
        cut off: SentencePiece tokenizers (Llama-2) turn a leading space into a
        separate token when the answer is tokenised on its own, which is not what the
        model sees (or generates) after the prompt.
        """
        ids = self._answer_cache.get(title)
        if ids is None:
            encode = self.tokenizer
            anchor = encode(ANSWER_SUFFIX, add_special_tokens=False)["input_ids"]
            joined = encode(ANSWER_SUFFIX + answer_text(title), add_special_tokens=False)[
                "input_ids"
            ]
            if joined[: len(anchor)] == anchor and len(joined) > len(anchor):
                ids = joined[len(anchor) :]
            else:
                ids = encode(answer_text(title), add_special_tokens=False)["input_ids"]
            ids = ids + [self.tokenizer.eos_token_id]
            self._answer_cache[title] = ids
        return ids

    def prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id if self.prompt_bos else None
        out = []
        for ids in encoded:
            if bos is not None:
                ids = [bos] + ids
            if len(ids) > self.max_prompt_length:
                # Keep the end of the prompt: the candidates and "Answer:".
                self.truncated += 1
                ids = ids[-self.max_prompt_length :]
            out.append(ids)
        return out

    def __call__(self, batch: list[PromptedExample]) -> dict[str, Any]:
        prompts = self.prompt_ids([b.prompt for b in batch])
        p_len = max(len(p) for p in prompts)
        prompt_ids = torch.full((len(batch), p_len), self.pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((len(batch), p_len), dtype=torch.long)
        for i, ids in enumerate(prompts):
            prompt_ids[i, p_len - len(ids) :] = torch.tensor(ids)
            prompt_mask[i, p_len - len(ids) :] = 1
        answers = [[self.answer_ids(a) for a in b.answers] for b in batch]
        n = max(len(a) for a in answers)
        a_len = max(len(x) for a in answers for x in a)
        answer_ids = torch.full((len(batch), n, a_len), self.pad_id, dtype=torch.long)
        answer_mask = torch.zeros((len(batch), n, a_len), dtype=torch.long)
        for i, per in enumerate(answers):
            for j, ids in enumerate(per):
                answer_ids[i, j, : len(ids)] = torch.tensor(ids)
                answer_mask[i, j, : len(ids)] = 1
        return {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "answer_ids": answer_ids,
            "answer_mask": answer_mask,
            "target_index": torch.tensor([b.target_index for b in batch]),
            "example_index": torch.tensor([b.index for b in batch]),
            "answer_positions": torch.tensor([b.positions for b in batch]),
            "prompts": [b.prompt for b in batch],
            "targets": [b.target for b in batch],
            "candidates": [b.candidates for b in batch],
            "rows": [b.row for b in batch],
        }
