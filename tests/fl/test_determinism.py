"""Bit-exact results in fresh processes, with any thread count: what lets an auditor recompute.

The fresh processes have no torch (it is made unimportable): the audit path is numpy only.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedchain.fl import (
    GENESIS_BASE,
    GENESIS_STRATEGY,
    FedAvg,
    ModelMeta,
    Schema,
    UpdateMeta,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
)
from fedchain.types import Address, Digest, RoundId

#: ``ModelSpec(num_buckets=4096, dim=8).to_json()`` of the ICD task: the model description the pin was made with.
SPEC = '{"dim":8,"ngram":2,"num_buckets":4096,"num_classes":22}'
SHAPES = {"embedding.weight": (4096, 8), "fc.bias": (22,), "fc.weight": (22, 8)}
SCHEMA = Schema.from_shapes(SHAPES)
COORDINATOR = Address("0xC0C0c0c0C0C0c0c0c0C0c0C0C0C0C0C0C0C0c0c0")
PARTICIPANTS = [
    Address("0x5e5E5e5e5E5e5E5E5e5E5E5e5e5E5E5E5e5E5E5e"),
    Address("0x1717171717171717171717171717171717171717"),
    Address("0xA4a4A4A4A4a4a4a4a4a4a4A4a4a4a4a4A4a4A4A4"),
]
SAMPLES = [3, 5, 11]

# Decodes the blobs in argv[1], aggregates them streaming with argv[2] threads, prints the aggregate's sha256.
CHILD = r"""
import hashlib, pathlib, sys
sys.modules["torch"] = None  # the audit path must not need it
from fedchain.fl import *
from fedchain.types import RoundId
d, threads = pathlib.Path(sys.argv[1]), int(sys.argv[2])
spec = sys.argv[3]
schema = Schema.from_shapes({"embedding.weight": (4096, 8), "fc.bias": (22,), "fc.weight": (22, 8)})
base_blob = (d / "base").read_bytes()
base = decode_model(base_blob, schema=schema, model=spec)
def updates():
    for path in sorted(d.glob("update-*"), key=lambda p: p.name.split("-", 2)[2].lower()):
        u = decode_update(path.read_bytes(), schema=schema)
        yield u.meta.sender, u.meta.samples, u.delta
params = fedavg_stream(base.params, updates(), total_samples=19, server_lr=0.8, threads=threads)
meta = ModelMeta(RoundId(0), hashlib.sha256(base_blob).digest(), base.meta.sender, 19, spec, FedAvg(0.8).name)
print(hashlib.sha256(encode_model(params, meta, schema=schema)).hexdigest())
"""


def _exact(shape: tuple[int, ...], k: int) -> np.ndarray:
    """Values that are exact binary fractions, so their construction is machine-independent."""
    n = int(np.prod(shape, dtype=np.int64))
    return ((np.arange(n, dtype=np.int64) * k % 97 - 48).astype(np.float32) / np.float32(64)).reshape(shape)


def _write_blobs(directory: Path) -> str:
    base = {name: _exact(shape, 3) for name, shape in SHAPES.items()}
    base_blob = encode_model(base, ModelMeta(RoundId(0), GENESIS_BASE, COORDINATOR, 0, SPEC, GENESIS_STRATEGY))
    (directory / "base").write_bytes(base_blob)
    base_hash = Digest(hashlib.sha256(base_blob).digest())
    for i, (who, n) in enumerate(zip(PARTICIPANTS, SAMPLES, strict=True)):
        # float32 division by 1000, correctly rounded (what torch's ``/ 1000`` gave when this was pinned)
        delta = {name: _exact(shape, 5 + 2 * i) / np.float32(1000) for name, shape in SHAPES.items()}
        blob = encode_update(delta, UpdateMeta(RoundId(0), base_hash, who, n))
        (directory / f"update-{i}-{who}").write_bytes(blob)
    return hashlib.sha256(base_blob).hexdigest()


def _child(directory: Path, threads: int, env: dict[str, str]) -> str:
    full_env = {**os.environ, **env}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), str(threads), SPEC],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip()


#: sha256 of the aggregate blob of the fixed example: the same on every machine.
PINNED_AGGREGATE = "8a4582e36a9b30fb52b7bb5aede7633b5412defe40a20ee0b68ae9850c8b54db"


@pytest.mark.slow
def test_the_aggregate_is_identical_across_torchless_processes_and_thread_counts(tmp_path: Path) -> None:
    _write_blobs(tmp_path)
    runs = [
        _child(tmp_path, 1, {"OMP_NUM_THREADS": "1"}),
        _child(tmp_path, 3, {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}),
    ]
    assert runs == [PINNED_AGGREGATE, PINNED_AGGREGATE]


def test_the_aggregate_in_this_process_matches_the_pin(tmp_path: Path) -> None:
    base_hex = _write_blobs(tmp_path)
    base = decode_model((tmp_path / "base").read_bytes(), schema=SCHEMA, model=SPEC)
    updates = [decode_update(p.read_bytes(), schema=SCHEMA) for p in tmp_path.glob("update-*")]
    params = FedAvg(server_lr=0.8).aggregate(
        base.params, [(u.meta.sender, u.meta.samples, u.delta) for u in updates], total_samples=19
    )
    meta = ModelMeta(RoundId(0), Digest(bytes.fromhex(base_hex)), COORDINATOR, 19, SPEC, "fedavg:server_lr=0.8")
    assert hashlib.sha256(encode_model(params, meta)).hexdigest() == PINNED_AGGREGATE


def test_the_pinned_inputs_are_the_ones_torch_built() -> None:
    """The numpy construction gives the very bytes the pin was made from (built with torch then)."""
    import torch

    for shape in SHAPES.values():
        n = int(np.prod(shape))
        for k in (3, 5, 7, 9):
            made = ((torch.arange(n, dtype=torch.int64) * k % 97 - 48).to(torch.float32) / 64).reshape(shape)
            assert _exact(shape, k).tobytes() == made.numpy().tobytes()
            assert (_exact(shape, k) / np.float32(1000)).tobytes() == (made / 1000).numpy().tobytes()
