"""Data pipeline: readers, candidate lists, prompts and the LightningDataModule."""

from recpo.data.datamodule import Collator, PromptDataset, RecDataModule
from recpo.data.errors import DataError
from recpo.data.records import Example, ItemCatalog, RecDataset

__all__ = [
    "Collator",
    "DataError",
    "Example",
    "ItemCatalog",
    "PromptDataset",
    "RecDataModule",
    "RecDataset",
]
