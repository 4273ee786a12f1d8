"""The ``lm`` task: a small GPT-2 pre-trained on public ICD-10-CM text, fine-tuned by FFA-LoRA.

See :mod:`fedchain.tasks.lm.task`. Load it as ``fedchain.tasks.lm:LmTask``.
"""

from fedchain.tasks.lm._data import Corpus, Holding, Split, demo_split, export_corpus, load_corpus, public_corpus
from fedchain.tasks.lm._model import LmBaseError, LoraSettings, ModelConfig, pretrain_base
from fedchain.tasks.lm.task import DEFAULT_CACHE_DIR, LmTask

__all__ = [
    "DEFAULT_CACHE_DIR",
    "Corpus",
    "Holding",
    "LmBaseError",
    "LmTask",
    "LoraSettings",
    "ModelConfig",
    "Split",
    "demo_split",
    "export_corpus",
    "load_corpus",
    "pretrain_base",
    "public_corpus",
]
