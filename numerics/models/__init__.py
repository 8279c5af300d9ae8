"""Models for the recipes, registered in ``MODELS`` by importing their modules here."""

from numerics.models import gpt, image, recsys  # noqa: F401  (registration)
from numerics.models.base import MODELS

__all__ = ["MODELS"]
