"""The LightningDataModule: examples -> prompts with candidates and negatives -> token tensors.

Three kinds of batch come out of one collator, all with the prompt once and a
``(B, N, A)`` block of answers:

* ``sft``: N = 1, the target title;
* ``preference``: N = 1 + K, the target first, then K negatives drawn from the 19
  non-target candidates (seeded; fixed across epochs unless ``resample_negatives``);
* ``eval``: N = 20, the candidates in display order, with ``target_index``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from recpo.data.candidates import attach_candidates, negative_choices, validate_candidates
from recpo.data.prompts import answer_text, build_prompt, domain_templates, draw_templates
from recpo.data.records import Example, ItemCatalog, RecDataset
from recpo.data.sources import load_source

log = logging.getLogger(__name__)

MODES = ("sft", "preference", "eval")
# Every template ends with this word; answers are tokenised as its continuation.
ANSWER_ANCHOR = "Answer:"


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
            anchor = encode(ANSWER_ANCHOR, add_special_tokens=False)["input_ids"]
            joined = encode(ANSWER_ANCHOR + answer_text(title), add_special_tokens=False)[
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


class EpochShuffleSampler(Sampler[int]):
    """A random order that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` before every epoch, so a run resumed from a
    checkpoint sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())


class RecDataModule(L.LightningDataModule):
    """Reads a dataset, builds candidates and prompts, and serves token batches.

    Built with the settings of one training stage; :meth:`for_stage` gives the
    data module of another stage over the same loaded rows. In the pipeline the
    dataset arguments come from ``cfg.data`` and the others from the stage
    (``cfg.sft`` / ``cfg.po``), ``cfg.eval`` and ``cfg.runtime``.

    Args:
        source: Keyword arguments of :func:`recpo.data.sources.load_source`.
        domain: Prompt domain (music, book, game, item).
        num_candidates: Candidates per prompt (target included).
        candidates: Candidate protocol, ``published`` or ``independent``
            (:func:`recpo.data.candidates.attach_candidates`).
        num_negatives: K, negatives per preference example (1..num_candidates-1).
        resample_negatives: Draw fresh negatives every epoch (seeded by epoch).
        seed: Seed of the data: candidate lists (``independent``) and the val/test
            rows' prompt templates.
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation and test.
        max_train_examples: Keep only the first N training examples (``None``: all).
        max_eval_examples: Keep only the first N val/test examples (``None``: all).
        max_prompt_length: Prompts longer than this keep their last tokens.
        num_workers: DataLoader worker processes.
        train_mode: ``sft`` or ``preference``: the batches of the training stage.
        train_seed: Seed of the training rows' draws (order, templates, negatives);
            ``None``: ``seed``.
    """

    def __init__(
        self,
        source: dict,
        domain: str = "item",
        num_candidates: int = 20,
        candidates: str = "published",
        num_negatives: int = 15,
        resample_negatives: bool = False,
        seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        max_prompt_length: int = 1024,
        num_workers: int = 0,
        train_mode: str = "sft",
        train_seed: int | None = None,
    ):
        super().__init__()
        self.source = dict(source)
        self.domain = domain
        self.templates = domain_templates(domain)
        self.num_candidates = num_candidates
        self.candidates = candidates
        self.seed = seed
        self.eval_batch_size = eval_batch_size
        self.max_eval_examples = max_eval_examples
        self.max_prompt_length = max_prompt_length
        self.num_workers = num_workers
        self._set_stage(
            train_mode,
            batch_size,
            max_train_examples,
            num_negatives,
            resample_negatives,
            train_seed,
        )
        self.dataset: RecDataset | None = None
        self.collator: Collator | None = None
        self._splits: dict[str, list[Example]] = {}

    def _set_stage(
        self,
        train_mode: str,
        batch_size: int,
        max_train_examples: int | None,
        num_negatives: int,
        resample_negatives: bool,
        train_seed: int | None = None,
    ) -> None:
        if train_mode not in ("sft", "preference"):
            raise ValueError(f"train_mode must be 'sft' or 'preference', got {train_mode!r}")
        if not 1 <= num_negatives <= self.num_candidates - 1:
            raise ValueError(
                f"po.num_negatives must be in 1..{self.num_candidates - 1}, got {num_negatives}"
            )
        self.train_mode = train_mode
        self.batch_size = batch_size
        self.max_train_examples = max_train_examples
        self.num_negatives = num_negatives
        self.resample_negatives = resample_negatives
        self.train_seed = self.seed if train_seed is None else train_seed

    def for_stage(
        self,
        train_mode: str,
        batch_size: int,
        max_train_examples: int | None = None,
        num_negatives: int = 15,
        resample_negatives: bool = False,
        train_seed: int | None = None,
    ) -> RecDataModule:
        """The data module of another training stage: the same loaded rows, candidates,
        evaluation settings and tokenizer, with this stage's batches."""
        self.load()
        other = copy.copy(self)
        other.trainer = None
        other._train = None
        other._set_stage(
            train_mode,
            batch_size,
            max_train_examples,
            num_negatives,
            resample_negatives,
            train_seed,
        )
        if train_mode == "preference":
            validate_candidates(
                other.examples("train"), num_negatives + 1, f"{self._source_name}:train"
            )
        return other

    def rows_key(self, splits: tuple[str, ...] = ("train", "val", "test")) -> str:
        """A content key of the rows of ``splits`` as this module serves them (caps
        applied): history, target and candidates of every row, and the item titles.
        Equal keys mean equal prompts whatever folder the files were read from."""
        digest = hashlib.sha256()
        for item, name in self.catalog.names.items():
            digest.update(f"{item}\t{name}\n".encode())
        for split in splits:
            digest.update(f"[{split}]\n".encode())
            for ex in self.examples(split):
                digest.update(f"{ex.history}{ex.target}{ex.candidates}\n".encode())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------ loading

    @property
    def _source_name(self) -> str:
        return self.source.get("folder") or self.source.get("name") or "data"

    def load(self) -> RecDataset:
        """Read the data and build and check candidate lists (idempotent)."""
        if self.dataset is not None:
            return self.dataset
        ds = load_source(**self.source)
        src = self.source.get("folder") or ds.name
        for split in ("train", "val", "test"):
            examples = attach_candidates(
                ds.split(split),
                ds.catalog,
                self.num_candidates,
                f"{src}:{split}",
                self.candidates,
                self.seed,
                split,
            )
            if split != "train" and self.max_eval_examples is not None:
                examples = examples[: self.max_eval_examples]
            # Preference rows need the target plus K negatives; for_stage checks again.
            train_k = split == "train" and self.train_mode == "preference"
            min_cands = self.num_negatives + 1 if train_k else 2
            validate_candidates(examples, min_cands, f"{src}:{split}", ds.catalog)
            self._splits[split] = examples
        self.dataset = ds
        log.info(
            "%s: %d train, %d val, %d test examples, %d items",
            ds.name,
            *(len(self._splits[s]) for s in ("train", "val", "test")),
            len(ds.catalog),
        )
        return ds

    def examples(self, split: str) -> list[Example]:
        """The examples of a split; training rows capped at ``max_train_examples``
        (read at each call, so a stage may change the cap)."""
        self.load()
        if split == "train" and self.max_train_examples is not None:
            return self._splits[split][: self.max_train_examples]
        return self._splits[split]

    @property
    def catalog(self) -> ItemCatalog:
        return self.load().catalog

    def tokenizer_texts(self, limit: int = 2000) -> list[str]:
        """Prompt texts for building a tokenizer: every template, filled with training rows."""
        ds = self.dataset_for("train", "eval")
        step = max(1, len(ds) // limit)
        texts = [ds[i].prompt for i in range(0, len(ds), step)]
        return [*self.templates, *texts]

    def set_tokenizer(self, tokenizer: Any, prompt_bos: bool = True) -> None:
        self.collator = Collator(tokenizer, self.max_prompt_length, prompt_bos)

    def dataset_for(self, split: str, mode: str) -> PromptDataset:
        return PromptDataset(
            self.examples(split),
            self.catalog,
            self.templates,
            mode,
            # Different splits get different template draws; the training rows' draws
            # (templates, negatives) follow the stage's seed.
            seed=self.train_seed if split == "train" else self.seed + {"val": 1, "test": 2}[split],
            num_negatives=self.num_negatives,
            resample_negatives=self.resample_negatives,
        )

    # ------------------------------------------------------------ Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        self.load()
        if self.collator is None:
            raise RuntimeError(
                "RecDataModule.set_tokenizer(tokenizer) must be called before training"
            )

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.train_seed) if shuffle else None,
            collate_fn=self.collator,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        self._train = self.dataset_for("train", self.train_mode)
        return self._loader(self._train, self.batch_size, shuffle=True)

    def set_epoch(self, epoch: int) -> None:
        if getattr(self, "_train", None) is not None:
            self._train.set_epoch(epoch)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        return self._loader(self.dataset_for(split, "eval"), self.eval_batch_size, shuffle=False)

    def candidates_dataloader(self) -> DataLoader:
        """Training rows with all their candidates, in order (reference precomputation)."""
        return self._loader(self.dataset_for("train", "eval"), self.eval_batch_size, shuffle=False)
