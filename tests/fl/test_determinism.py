"""Bit-exact results in fresh processes, with any thread count: what lets an auditor recompute."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eth_utils import to_checksum_address

from fedchain.fl import (
    GENESIS_BASE,
    GENESIS_STRATEGY,
    FedAvg,
    ModelMeta,
    ModelSpec,
    UpdateMeta,
    encode_model,
    encode_update,
    init_params,
    param_shapes,
)
from fedchain.types import Address, Digest, RoundId

SPEC = ModelSpec(num_buckets=4096, dim=8)
COORDINATOR = Address(to_checksum_address("0x" + "c0" * 20))
PARTICIPANTS = [Address(to_checksum_address("0x" + f"{i:02x}" * 20)) for i in (0x5E, 0x17, 0xA4)]
SAMPLES = [3, 5, 11]

# Decodes the blobs in argv[1], aggregates them streaming, trains once, prints two sha256s.
CHILD = r"""
import hashlib, sys, pathlib, torch
threads = int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
from fedchain.fl import *
from fedchain.types import RoundId
d = pathlib.Path(sys.argv[1])
spec = ModelSpec(num_buckets=4096, dim=8)
base_blob = (d / "base").read_bytes()
base = decode_model(base_blob, spec=spec)
def updates():
    for path in sorted(d.glob("update-*"), key=lambda p: p.name.split("-", 2)[2].lower()):
        u = decode_update(path.read_bytes(), expected_shapes=param_shapes(spec))
        yield u.meta.sender, u.meta.samples, u.delta
params = FedAvg(server_lr=0.8).aggregate(base.params, updates(), total_samples=19)
meta = ModelMeta(RoundId(0), hashlib.sha256(base_blob).digest(), base.meta.sender, 19, spec, "fedavg:server_lr=0.8")
print(hashlib.sha256(encode_model(params, meta)).hexdigest())
texts = tuple(f"word{i % 37} other{i % 11} thing{(i * 7) % 23}" for i in range(600))
data = Dataset(name="synthetic", texts=texts, labels=tuple(i % 3 for i in range(600)), label_names=("a", "b", "c"))
small = ModelSpec(num_buckets=512, dim=8, num_classes=3)
update = train_local(init_params(small, 4), data, TrainConfig(epochs=2, batch_size=16), spec=small, seed=9)
print(hashlib.sha256(b"".join(update.delta[n].numpy().tobytes() for n in sorted(update.delta))).hexdigest())
"""


def _exact(shape: tuple[int, ...], k: int) -> torch.Tensor:
    """Values that are exact binary fractions, so their construction is machine-independent."""
    n = 1
    for s in shape:
        n *= s
    return ((torch.arange(n, dtype=torch.int64) * k % 97 - 48).to(torch.float32) / 64).reshape(shape)


def _write_blobs(directory: Path) -> str:
    shapes = param_shapes(SPEC)
    base = {name: _exact(shape, 3) for name, shape in shapes.items()}
    base_blob = encode_model(base, ModelMeta(RoundId(0), GENESIS_BASE, COORDINATOR, 0, SPEC, GENESIS_STRATEGY))
    (directory / "base").write_bytes(base_blob)
    base_hash = Digest(hashlib.sha256(base_blob).digest())
    for i, (who, n) in enumerate(zip(PARTICIPANTS, SAMPLES, strict=True)):
        delta = {name: _exact(shape, 5 + 2 * i) / 1000 for name, shape in shapes.items()}
        blob = encode_update(delta, UpdateMeta(RoundId(0), base_hash, who, n))
        (directory / f"update-{i}-{who}").write_bytes(blob)
    return hashlib.sha256(base_blob).hexdigest()


def _child(directory: Path, threads: int, env: dict[str, str]) -> list[str]:
    full_env = {**os.environ, **env}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), str(threads)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.split()


#: sha256 of the aggregate blob of the fixed example: the same on every machine.
PINNED_AGGREGATE = "8a4582e36a9b30fb52b7bb5aede7633b5412defe40a20ee0b68ae9850c8b54db"


def _training_digest_here() -> str:
    namespace: dict[str, object] = {}
    training = CHILD[CHILD.index("texts = ") :].replace("print(", "result = (")
    exec("from fedchain.fl import *\nimport hashlib\n" + training, namespace)  # the child's code, in this process
    return str(namespace["result"])


@pytest.mark.slow
def test_aggregate_and_training_are_identical_across_processes_and_thread_counts(tmp_path: Path) -> None:
    _write_blobs(tmp_path)
    runs = [
        _child(tmp_path, 1, {"OMP_NUM_THREADS": "1"}),
        _child(tmp_path, 2, {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}),
    ]
    assert all(len(r) == 2 for r in runs)
    assert runs[0] == runs[1]
    assert runs[0][0] == PINNED_AGGREGATE
    assert runs[0][1] == _training_digest_here()  # this process: default thread count


def test_the_aggregate_in_this_process_matches_a_fresh_process(tmp_path: Path) -> None:
    from fedchain.fl import decode_model, decode_update

    base_hex = _write_blobs(tmp_path)
    base = decode_model((tmp_path / "base").read_bytes(), spec=SPEC)
    updates = [decode_update(p.read_bytes(), expected_shapes=param_shapes(SPEC)) for p in tmp_path.glob("update-*")]
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        params = FedAvg(server_lr=0.8).aggregate(
            base.params, [(u.meta.sender, u.meta.samples, u.delta) for u in updates], total_samples=19
        )
    finally:
        torch.set_num_threads(previous)
    meta = ModelMeta(RoundId(0), Digest(bytes.fromhex(base_hex)), COORDINATOR, 19, SPEC, "fedavg:server_lr=0.8")
    assert hashlib.sha256(encode_model(params, meta)).hexdigest() == PINNED_AGGREGATE


def test_genesis_parameters_are_a_function_of_the_seed() -> None:
    assert all(
        torch.equal(a, b) for a, b in zip(init_params(SPEC, 1).values(), init_params(SPEC, 1).values(), strict=True)
    )
    assert not torch.equal(init_params(SPEC, 1)["fc.weight"], init_params(SPEC, 2)["fc.weight"])
