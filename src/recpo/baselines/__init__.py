"""Traditional sequential recommenders (GRU4Rec, Caser, SASRec) on the LLM models' splits."""

from recpo.baselines.data import SequenceBatch, SequenceDataModule
from recpo.baselines.models import Caser, GRU4Rec, SASRec, SequentialRecommender
from recpo.baselines.module import BaselineModule

__all__ = [
    "BaselineModule",
    "Caser",
    "GRU4Rec",
    "SASRec",
    "SequenceBatch",
    "SequenceDataModule",
    "SequentialRecommender",
]
