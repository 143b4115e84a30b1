"""The LightningDataModule: examples -> prompts with candidates and negatives -> token
batches (:mod:`recpo.data.batches`), for one pipeline stage (cfg.stages) and for evaluation.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from recpo.data.batches import Collator, PromptDataset
from recpo.data.candidates import attach_candidates, validate_candidates
from recpo.data.loader import EpochShuffleSampler, ResumableLoader
from recpo.data.prompts import domain_templates
from recpo.data.records import Example, ItemCatalog, RecDataset
from recpo.data.sources import load_source

log = logging.getLogger(__name__)


class RecDataModule(L.LightningDataModule):
    """Reads a dataset, builds candidates and prompts, and serves token batches.

    Built with the training settings of one pipeline stage (``train_mode``, batch size,
    row cap, negatives); :meth:`for_training` gives the data module with other training
    settings over the same loaded rows. In the pipeline the dataset arguments come from
    ``cfg.data`` and the others from ``cfg.sft`` / ``cfg.po``, ``cfg.eval`` and
    ``cfg.runtime``.

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
        train_mode: ``sft`` or ``preference``: the kind of training batches.
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
        self._set_training(
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

    def _set_training(
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
        self._train_loader: ResumableLoader | None = None
        self._resume_batches = 0  # from a checkpoint: the epoch's batches already trained

    def for_training(
        self,
        train_mode: str,
        batch_size: int,
        max_train_examples: int | None = None,
        num_negatives: int = 15,
        resample_negatives: bool = False,
        train_seed: int | None = None,
    ) -> RecDataModule:
        """The data module with other training settings (another pipeline stage's): the
        same loaded rows, candidates, evaluation settings and tokenizer, with these
        training batches."""
        self.load()
        other = copy.copy(self)
        other.trainer = None
        other._train = None
        other._set_training(
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
            # Preference rows need the target plus K negatives; for_training checks again.
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
        (read at each call, so :meth:`for_training` may change the cap)."""
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
            # (templates, negatives) follow the training seed (the PO stage: po.seed).
            seed=self.train_seed if split == "train" else self.seed + {"val": 1, "test": 2}[split],
            num_negatives=self.num_negatives,
            resample_negatives=self.resample_negatives,
        )

    # ------------------------------------------------------------ Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        # ``stage`` is Lightning's (fit, validate, test): every one needs the same rows.
        self.load()
        if self.collator is None:
            raise RuntimeError(
                "RecDataModule.set_tokenizer(tokenizer) must be called before training"
            )

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        # The training loader (shuffled) resumes mid-epoch: recpo.data.loader. Each
        # loader has its own generator (its workers' base seed), so building one never
        # draws from the global generator: a resumed run, which builds its training
        # loader once more, draws the dropout of an uninterrupted one.
        return (ResumableLoader if shuffle else DataLoader)(
            dataset,
            batch_size=batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.train_seed) if shuffle else None,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.train_seed if shuffle else self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        self._train = self.dataset_for("train", self.train_mode)
        self._train_loader = self._loader(self._train, self.batch_size, shuffle=True)
        self._train_loader.load_state_dict({"batches": self._resume_batches})
        return self._train_loader

    # The training loader's place in its epoch, kept in every checkpoint through the data
    # module: Lightning restores the data module's state in every setting, also after it
    # has built the training loader (DeepSpeed; a module that asks for the number of
    # training steps in configure_optimizers), when it no longer restores the loader's own.
    def state_dict(self) -> dict[str, int]:
        if self._train_loader is None:
            return {}
        return {"train_batches": self._train_loader.state_dict()["batches"]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_batches = int(state.get("train_batches", 0))
        if self._train_loader is not None:
            self._train_loader.load_state_dict({"batches": self._resume_batches})

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
