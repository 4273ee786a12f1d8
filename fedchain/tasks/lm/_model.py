"""The ``lm`` model: a small GPT-2 built from a config, its pre-trained base, and FFA-LoRA adapters.

Nothing is downloaded: the model is ``GPT2LMHeadModel(GPT2Config(...))`` over the byte
vocabulary of :mod:`._data`, pre-trained here on the public corpus and cached in a
directory as a canonical safetensors file (sorted keys, :func:`fedchain.fl._safetensors.render`),
whose sha256 is the base's digest.

The adapters are LoRA (``peft``) with **A frozen** at values drawn from a seed and only **B**
trained and exchanged (FFA-LoRA, Sun et al., ICLR 2024). A layer's update is
``(alpha / r) * B @ A``; with one A shared by every participant it is linear in B, so the
FedAvg of the B matrices *is* the FedAvg of the updates, exactly (plain LoRA, averaging A and B
separately, gives ``mean(B) @ mean(A) != mean(B @ A)``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fedchain.tasks._torch import torch_threads

if TYPE_CHECKING:
    from transformers import GPT2Config

from fedchain.errors import FedchainError
from fedchain.fl import _safetensors
from fedchain.tasks.lm._data import BOS, EOS, PAD, VOCAB_SIZE, Corpus, encode

logger = logging.getLogger(__name__)

#: ``format`` metadata of a cached base file.
BASE_FORMAT = "fedchain/lm-base-v1"


class LmBaseError(FedchainError, ValueError):
    """A cached or given base model is not the one expected (digest or settings differ).

    Parameters
    ----------
    path:
        The base file.
    problem:
        What differs, as a phrase.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"base model {path}: {problem}")


@dataclass(frozen=True)
class ModelConfig:
    """The base model's shape (a GPT-2 over bytes) and its pre-training."""

    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    n_positions: int = 128
    pretrain_seed: int = 0
    pretrain_steps: int = 400
    pretrain_batch: int = 16
    pretrain_lr: float = 3e-3

    def key(self) -> str:
        """The cache file's name stem: every setting, so a different config never hits the cache."""
        return (
            f"lm-base-L{self.n_layer}-H{self.n_head}-E{self.n_embd}-P{self.n_positions}"
            f"-s{self.pretrain_seed}-n{self.pretrain_steps}-b{self.pretrain_batch}-lr{self.pretrain_lr:g}"
        )

    def gpt2(self) -> GPT2Config:
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=VOCAB_SIZE,
            n_positions=self.n_positions,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            # no dropout: training is a deterministic function of the seed and the data
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=BOS,
            eos_token_id=EOS,
            pad_token_id=PAD,
            tie_word_embeddings=True,
        )


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch's global generator, force deterministic kernels and one thread, restoring all three after.

    One thread: the CPU kernels' reduction order depends on the thread count, so a base
    pre-trained (or a round trained) under another count would differ in its last bits and the
    base's digest, which the manifest fixes, would not be reproducible.
    """
    was = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]), torch_threads(1):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was)


def build_model(config: ModelConfig, seed: int) -> nn.Module:
    """A freshly initialised GPT-2 of ``config``, from ``seed`` (no hub, no download)."""
    from transformers import GPT2LMHeadModel

    with deterministic(seed):
        model = GPT2LMHeadModel(config.gpt2())
    model.eval()  # type: ignore[no-untyped-call]
    return model


def base_state(model: nn.Module) -> dict[str, np.ndarray]:
    """The base's parameters as float32 arrays (tied weights once, under their first name)."""
    return {n: p.detach().cpu().numpy().astype(np.float32, copy=True) for n, p in model.named_parameters()}


def base_bytes(state: dict[str, np.ndarray], config: ModelConfig) -> bytes:
    """The canonical bytes of a base: sorted tensors, the config in the metadata."""
    meta = {"format": BASE_FORMAT, "config": json.dumps(asdict(config), sort_keys=True)}
    return _safetensors.render(state, meta)


def digest(data: bytes) -> str:
    """``"0x"`` + sha256 hex of ``data``."""
    return "0x" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- batches and loss


def pad_batch(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, labels) padded to the longest sequence; padding's labels are -100 (ignored)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        labels[i, : len(s)] = ids[i, : len(s)]
    return ids, labels


def nll(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed next-token negative log-likelihood, tokens predicted); BOS is never predicted."""
    logits = model(input_ids=ids, attention_mask=(ids != PAD).long()).logits
    target = labels[:, 1:]
    loss = nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return loss, int((target != -100).sum())


def evaluate_model(model: nn.Module, corpus: Corpus, max_len: int, batch_size: int = 64) -> dict[str, float]:
    """``loss`` (mean NLL per predicted token, nats) and ``perplexity`` (its exp) on ``corpus``."""
    seqs = [encode(t, max_len) for t in corpus.texts]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(seqs), batch_size):
            loss, n = nll(model, *pad_batch(seqs[i : i + batch_size]))
            total += float(loss)
            count += n
    mean = total / max(count, 1)
    return {"loss": mean, "perplexity": math.exp(mean)}


# --------------------------------------------------------------------------- pre-training


def _pretrain(config: ModelConfig, corpus: Corpus) -> nn.Module:
    """Train a fresh base on ``corpus`` packed into windows of ``n_positions`` tokens."""
    stream = [tok for t in corpus.texts for tok in encode(t, config.n_positions)]
    width = config.n_positions
    windows = torch.tensor(stream[: len(stream) // width * width], dtype=torch.long).view(-1, width)
    model = build_model(config, config.pretrain_seed)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=config.pretrain_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / 50) * max(0.0, 1 - step / config.pretrain_steps)
    )
    gen = torch.Generator().manual_seed(config.pretrain_seed)
    order = torch.randperm(len(windows), generator=gen)
    at = 0
    with deterministic(config.pretrain_seed), torch.enable_grad():
        for step in range(config.pretrain_steps):
            if at + config.pretrain_batch > len(order):
                order, at = torch.randperm(len(windows), generator=gen), 0
            batch = windows[order[at : at + config.pretrain_batch]]
            at += config.pretrain_batch
            loss, n = nll(model, batch, batch)
            opt.zero_grad(set_to_none=True)
            (loss / n).backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            if step % 100 == 0 or step == config.pretrain_steps - 1:
                logger.info(
                    "pre-training step %d/%d: loss %.4f", step + 1, config.pretrain_steps, float(loss.detach()) / n
                )
    model.eval()
    return model


def pretrain_base(
    cache_dir: str | os.PathLike[str], config: ModelConfig, corpus: Corpus | None = None, *, expected: str | None = None
) -> tuple[dict[str, np.ndarray], str]:
    """The pre-trained base of ``config``: loaded from ``cache_dir`` if there, else trained and cached.

    The cache file is ``<cache_dir>/<config.key()>.safetensors``, beside a ``.sha256`` file
    holding its digest written when it was made; loading checks the bytes against it (and
    against ``expected``, if given: the digest a federation's manifest fixed).

    Parameters
    ----------
    cache_dir:
        Where the base is cached (created if missing).
    config:
        The model's shape and pre-training settings (``pretrain_seed`` seeds everything).
    corpus:
        The pre-training text; :func:`~._data.public_corpus` if omitted.
    expected:
        The digest the base must have.

    Returns
    -------
    (state, digest)
        The base's float32 parameters by name, and ``"0x"`` + sha256 of its canonical bytes.

    Raises
    ------
    LmBaseError
        If the cached file's bytes do not match its recorded digest, its settings differ from
        ``config``, or the base's digest is not ``expected``.
    """
    from safetensors.numpy import load as load_safetensors

    from fedchain.tasks.lm._data import public_corpus

    directory = Path(cache_dir)
    path = directory / f"{config.key()}.safetensors"
    sidecar = path.with_suffix(".sha256")
    if path.exists() and sidecar.exists():
        data = path.read_bytes()
        found = digest(data)
        recorded = sidecar.read_text(encoding="ascii").strip()
        if found != recorded:
            raise LmBaseError(str(path), f"bytes hash to {found}, recorded {recorded}")
        state = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in load_safetensors(data).items()}
        if base_bytes(state, config) != data:
            raise LmBaseError(str(path), "not the canonical encoding of a base with these settings")
        logger.info("loaded the lm base from %s (%s)", path, found)
    else:
        start, cpu = time.perf_counter(), time.process_time()
        model = _pretrain(config, corpus if corpus is not None else public_corpus())
        state = base_state(model)
        data = base_bytes(state, config)
        found = digest(data)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        sidecar.write_text(found + "\n", encoding="ascii")
        logger.info(
            "pre-trained the lm base in %.1f s (%.1f s CPU), cached at %s (%s)",
            time.perf_counter() - start,
            time.process_time() - cpu,
            path,
            found,
        )
    if expected is not None and found != expected:
        raise LmBaseError(str(path), f"digest {found}, the federation expects {expected}")
    return state, found


# --------------------------------------------------------------------------- LoRA


@dataclass(frozen=True)
class LoraSettings:
    """FFA-LoRA: rank, scale, target modules, and the seed of the frozen A matrices."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")
    a_seed: int = 0


def lora_model(config: ModelConfig, state: dict[str, np.ndarray], lora: LoraSettings) -> nn.Module:
    """The base with LoRA adapters: base and A frozen (A from ``lora.a_seed``), B zero and trainable."""
    from peft import LoraConfig, get_peft_model

    model = build_model(config, config.pretrain_seed)
    missing = set(dict(model.named_parameters())) ^ set(state)
    if missing:
        raise LmBaseError("<state>", f"parameters differ from the config's: {sorted(missing)[:4]}")
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.from_numpy(state[name]))
    peft_config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=0.0,
        target_modules=list(lora.targets),
        fan_in_fan_out=True,  # GPT-2's Conv1D stores weights as (in, out)
        bias="none",
    )
    with deterministic(lora.a_seed), warnings.catch_warnings():
        # peft 0.21 asks transformers 5 for a deprecated attribute; not ours to fix
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        peft_model = get_peft_model(model, peft_config)
    gen = torch.Generator().manual_seed(lora.a_seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if ".lora_A." in name:
                # N(0, 1/fan_in): A x keeps the scale of x; drawn in sorted name order from one generator
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param.shape[1]))
                param.requires_grad_(False)
            elif ".lora_B." in name:
                param.zero_()
                param.requires_grad_(True)
            else:
                param.requires_grad_(False)
    peft_model.eval()
    return peft_model


def _short(name: str) -> str:
    """``base_model.model.transformer.h.0.attn.c_attn.lora_B.default.weight`` -> ``transformer.h.0.attn.c_attn.lora_B``."""
    return name.removeprefix("base_model.model.").replace(".default.weight", "")


def adapter_params(model: nn.Module, kind: str) -> dict[str, nn.Parameter]:
    """The ``lora_A`` or ``lora_B`` parameters by short name, sorted."""
    found = {_short(n): p for n, p in model.named_parameters() if f".{kind}." in n}
    return dict(sorted(found.items()))


__all__ = [
    "BASE_FORMAT",
    "LmBaseError",
    "LoraSettings",
    "ModelConfig",
    "adapter_params",
    "base_bytes",
    "base_state",
    "build_model",
    "deterministic",
    "digest",
    "evaluate_model",
    "lora_model",
    "nll",
    "pad_batch",
    "pretrain_base",
]
