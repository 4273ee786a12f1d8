"""The ``lm`` task: federated FFA-LoRA fine-tuning of a small pre-trained GPT-2 on hospitals' text.

The base (:mod:`._model`) is pre-trained on public ICD-10-CM text, cached, frozen and named by
digest in :meth:`LmTask.frozen`; the exchanged tensors are the LoRA B matrices only (A frozen
at values drawn from ``lora_seed``), so FedAvg over them is exactly FedAvg over the adapters'
weight updates. Each participant fine-tunes on its private diagnosis titles.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedchain.errors import CodecError, ConfigError
from fedchain.fl import _safetensors
from fedchain.fl.schema import Arrays, Schema
from fedchain.tasks.api import Config, DemoData, DemoParticipant, Task, TrainResult
from fedchain.tasks.lm._data import Corpus, Split, demo_split, encode, load_corpus
from fedchain.tasks.lm._model import (
    LoraSettings,
    ModelConfig,
    adapter_params,
    base_state,
    build_model,
    deterministic,
    digest,
    evaluate_model,
    lora_model,
    nll,
    pad_batch,
    pretrain_base,
)

logger = logging.getLogger(__name__)

#: Where the pre-trained base is cached, relative to the working directory.
DEFAULT_CACHE_DIR = ".fedchain-cache/lm"


class LmTask(Task):
    """A byte-level GPT-2 language model fine-tuned with FFA-LoRA (only the B matrices travel).

    Parameters (the ``[task.settings]`` table)
    ------------------------------------------
    n_layer, n_head, n_embd, n_positions:
        The GPT-2's shape (default 2 layers, 2 heads, 64 dimensions, 128 positions).
    pretrain_seed, pretrain_steps, pretrain_batch, pretrain_lr:
        The base's pre-training on the public corpus (seed 0, 400 steps of Adam on batches of
        16 windows of ``n_positions`` bytes, peak learning rate 3e-3).
    lora_rank, lora_alpha, lora_targets, lora_seed:
        The adapters: rank 8, scale ``alpha / rank`` = 16 / 8, on GPT-2's ``c_attn``, ``c_proj``
        (attention and MLP) and ``c_fc``; the frozen A matrices are drawn from ``lora_seed`` (0).
    cache_dir:
        Where the base is cached (``.fedchain-cache/lm`` in the working directory).
    base_digest:
        If given, the base must have this digest (a federation's manifest's ``frozen.base``);
        a node whose pre-trained or cached base differs refuses to start.
    epochs, lr, batch_size:
        The default round config: local epochs of Adam over B (1, 3e-3, 16).
    demo_train_records, demo_heldout_records:
        Titles per demo participant for training (600) and held out (150).
    """

    name = "lm"
    version = "1"

    def __init__(
        self,
        *,
        n_layer: int = 2,
        n_head: int = 2,
        n_embd: int = 64,
        n_positions: int = 128,
        pretrain_seed: int = 0,
        pretrain_steps: int = 400,
        pretrain_batch: int = 16,
        pretrain_lr: float = 3e-3,
        lora_rank: int = 8,
        lora_alpha: int = 16,
        lora_targets: Sequence[str] = ("c_attn", "c_proj", "c_fc"),
        lora_seed: int = 0,
        cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
        base_digest: str | None = None,
        epochs: int = 1,
        lr: float = 3e-3,
        batch_size: int = 16,
        demo_train_records: int = 600,
        demo_heldout_records: int = 150,
    ) -> None:
        if n_embd % n_head:
            raise ConfigError("task.settings.n_embd", f"{n_embd} is not a multiple of n_head={n_head}")
        if n_positions < 8:
            raise ConfigError("task.settings.n_positions", f"must be at least 8, got {n_positions}")
        if lora_rank < 1:
            raise ConfigError("task.settings.lora_rank", f"must be at least 1, got {lora_rank}")
        if isinstance(lora_targets, str) or not lora_targets:
            raise ConfigError("task.settings.lora_targets", "must be a non-empty list of module names")
        self.model_config = ModelConfig(
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
            n_positions=n_positions,
            pretrain_seed=pretrain_seed,
            pretrain_steps=pretrain_steps,
            pretrain_batch=pretrain_batch,
            pretrain_lr=pretrain_lr,
        )
        self.lora = LoraSettings(rank=lora_rank, alpha=int(lora_alpha), targets=tuple(lora_targets), a_seed=lora_seed)
        self.cache_dir = os.fspath(cache_dir)
        self.base_digest = base_digest
        self._train_config = {"epochs": epochs, "lr": lr, "batch_size": batch_size}
        self.demo_train_records = demo_train_records
        self.demo_heldout_records = demo_heldout_records
        self._schema: Schema | None = None
        self._model: nn.Module | None = None
        self._digest: str | None = None
        self._base: Arrays = {}

    # ------------------------------------------------------------------ the model

    def _ready(self) -> nn.Module:
        """The LoRA model over the pre-trained base (pre-trained or loaded on first use)."""
        if self._model is None:
            state, found = pretrain_base(self.cache_dir, self.model_config, expected=self.base_digest)
            self._model, self._digest, self._base = lora_model(self.model_config, state, self.lora), found, state
        return self._model

    def _set_b(self, arrays: Arrays) -> dict[str, nn.Parameter]:
        params = adapter_params(self._ready(), "lora_B")
        expected = self.schema().shapes
        if set(arrays) != set(expected):
            raise CodecError("shape", f"arrays {sorted(arrays)[:3]}... are not the lm schema's tensors")
        with torch.no_grad():
            for name, param in params.items():
                value = np.asarray(arrays[name], dtype=np.float32)
                if value.shape != expected[name]:
                    raise CodecError("shape", f"{name}: shape {value.shape}, the schema has {expected[name]}")
                param.copy_(torch.from_numpy(value))
        return params

    def base_parameters(self) -> int:
        """Parameters of the full base model (what a full-model update would move)."""
        return sum(p.numel() for p in build_model(self.model_config, 0).parameters())

    def base(self) -> Arrays:
        """The frozen pre-trained base's parameters (pre-trained or loaded on first use)."""
        self._ready()
        return dict(self._base)

    def lora_a(self) -> Arrays:
        """The frozen A matrices (from ``lora_seed``), by short name."""
        return {
            n: p.detach().numpy().astype(np.float32, copy=True)
            for n, p in adapter_params(self._ready(), "lora_A").items()
        }

    # ------------------------------------------------------------------ the Task API

    def schema(self) -> Schema:
        if self._schema is None:
            # shapes only: an untrained base of the same config has the same adapters
            probe = lora_model(self.model_config, base_state(build_model(self.model_config, 0)), self.lora)
            self._schema = Schema.from_shapes({n: tuple(p.shape) for n, p in adapter_params(probe, "lora_B").items()})
        return self._schema

    def frozen(self) -> Mapping[str, str]:
        self._ready()
        assert self._digest is not None
        a = _safetensors.render(self.lora_a(), {"format": "fedchain/lm-lora-a-v1"})
        return {"base": self._digest, "lora_A": digest(a)}

    def describe(self) -> str:
        c, lo = self.model_config, self.lora
        return (
            f"lm:{self.version} gpt2-bytes n_layer={c.n_layer},n_head={c.n_head},n_embd={c.n_embd},"
            f"n_positions={c.n_positions} ffa-lora rank={lo.rank},alpha={lo.alpha:g},"
            f"targets={'+'.join(lo.targets)},a_seed={lo.a_seed}"
        )

    def train_config(self) -> Config:
        return dict(self._train_config)

    def init(self, seed: int) -> Arrays:
        """B = 0 (LoRA's initialisation, whatever the seed): the genesis model is the base itself."""
        return {name: np.zeros(shape, dtype=np.float32) for name, shape in self.schema().shapes.items()}

    def load_data(self, source: str) -> Corpus:
        return load_corpus(source)

    def train(self, arrays: Arrays, data: Any, config: Config, *, seed: int) -> TrainResult:
        corpus = _corpus(data)
        epochs, lr, batch_size = _round_config(config)
        model = self._ready()
        params = self._set_b(arrays)
        seqs = [encode(t, self.model_config.n_positions) for t in corpus.texts]
        opt = torch.optim.Adam(list(params.values()), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        total, count = 0.0, 0
        model.train()
        try:
            with deterministic(seed), torch.enable_grad():
                for _ in range(epochs):
                    order = torch.randperm(len(seqs), generator=gen).tolist()
                    for i in range(0, len(order), batch_size):
                        loss, n = nll(model, *pad_batch([seqs[j] for j in order[i : i + batch_size]]))
                        opt.zero_grad(set_to_none=True)
                        (loss / n).backward()  # type: ignore[no-untyped-call]
                        opt.step()
                        total += float(loss.detach())
                        count += n
        finally:
            model.eval()
        mean = total / max(count, 1)
        trained = {n: p.detach().numpy().astype(np.float32, copy=True) for n, p in params.items()}
        logger.debug("lm: trained %d records for %d epoch(s), loss %.4f", len(seqs), epochs, mean)
        return TrainResult(trained, len(seqs), {"loss": mean, "perplexity": math.exp(min(mean, 80.0))})

    def evaluate(self, arrays: Arrays, data: Any) -> Mapping[str, float]:
        corpus = _corpus(data)
        model = self._ready()
        self._set_b(arrays)
        return evaluate_model(model, corpus, self.model_config.n_positions)

    def num_samples(self, data: Any) -> int:
        return len(_corpus(data))

    def demo_split(self, num_participants: int, seed: int) -> Split:
        """The demo's text with every participant's held-out part (for benchmarks and reports)."""
        return demo_split(
            num_participants, seed, train_records=self.demo_train_records, heldout_records=self.demo_heldout_records
        )

    def demo(self, num_participants: int, seed: int) -> DemoData:
        split = self.demo_split(num_participants, seed)
        return DemoData(
            participants=tuple(DemoParticipant(h.name, h.train) for h in split.holdings),
            test=split.pooled_heldout(),
        )


def _corpus(data: Any) -> Corpus:
    if isinstance(data, Corpus):
        return data
    if isinstance(data, (list, tuple)) and all(isinstance(t, str) for t in data):
        return Corpus("texts", tuple(data))
    raise TypeError(f"lm data must be a Corpus or a sequence of strings, not {type(data).__name__}")


def _round_config(config: Config) -> tuple[int, float, int]:
    epochs, lr, batch_size = config.get("epochs", 1), config.get("lr", 3e-3), config.get("batch_size", 16)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError("train.epochs", f"must be a positive integer, got {epochs!r}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not 0 < lr < math.inf:
        raise ConfigError("train.lr", f"must be a positive number, got {lr!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError("train.batch_size", f"must be a positive integer, got {batch_size!r}")
    return epochs, float(lr), batch_size


__all__ = ["DEFAULT_CACHE_DIR", "LmTask"]
