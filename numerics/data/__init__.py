"""Datasets for the recipes, registered in ``DATASETS`` by importing their modules here."""

from numerics.data import criteo, image, synthetic_ctr, text  # noqa: F401  (registration)
from numerics.data.base import DATASETS, ArraySplit, Dataset, Sampling, WindowSplit

__all__ = ["DATASETS", "ArraySplit", "Dataset", "Sampling", "WindowSplit"]
