"""The ``digits`` task: a small CNN on scikit-learn's 8x8 handwritten digits, split non-IID (Dirichlet).

See :class:`DigitsTask`.
"""

from __future__ import annotations

from fedchain.tasks.digits.data import DigitsData, dirichlet_split, export_shard, load_digits_data, load_shard
from fedchain.tasks.digits.task import DigitsTask

__all__ = ["DigitsData", "DigitsTask", "dirichlet_split", "export_shard", "load_digits_data", "load_shard"]
