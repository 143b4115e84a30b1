"""Data pipeline: readers, candidate lists, prompts and the LightningDataModule."""

from recpo.data.batches import Collator, PromptDataset
from recpo.data.datamodule import RecDataModule
from recpo.data.records import Example, ItemCatalog, RecDataset

__all__ = [
    "Collator",
    "Example",
    "ItemCatalog",
    "PromptDataset",
    "RecDataModule",
    "RecDataset",
]
