"""Plain FedAvg in memory, and that the ledger's path through the codec computes the same models."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from eth_utils import to_checksum_address

from fedchain.fl import (
    FedAvg,
    FederatedSplit,
    ModelMeta,
    ModelSpec,
    UpdateItem,
    UpdateMeta,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
    genesis_params,
    local_round,
    majority_accuracy,
    param_shapes,
    run_plain_fedavg,
    train_centralized,
)
from fedchain.fl.codec import GENESIS_BASE, GENESIS_STRATEGY
from fedchain.fl.train import TrainConfig
from fedchain.types import Address, Digest, RoundId

SPEC = ModelSpec(num_buckets=4096, dim=16)
COORDINATOR = Address(to_checksum_address("0x" + "c0" * 20))


def test_plain_fedavg_learns_close_to_centralized_training(small_split: FederatedSplit) -> None:
    strategy = FedAvg()
    run = run_plain_fedavg(small_split, SPEC, 3, strategy, 0)
    central = train_centralized(small_split, SPEC, 3, strategy, 0)
    majority = majority_accuracy(small_split.pooled(), small_split.test)
    assert len(run.accuracies) == 3 and run.accuracies[-1] > run.accuracies[0]
    assert run.accuracies[-1] > majority + 0.2
    assert central.epochs == 3
    assert (
        abs(central.accuracy - run.accuracies[-1]) < 0.15
    )  # a tenth of the data, so looser than the full-size 5 points
    assert {name for r in run.rounds for name, _ in r.train_seconds} == set(small_split.names)


def test_a_federation_through_blobs_computes_exactly_the_plain_fedavg_model(small_split: FederatedSplit) -> None:
    """What coordinator and participants do through the ledger, minus chain and store."""
    strategy, seed, rounds = FedAvg(), 11, 2
    addresses = {
        name: Address(to_checksum_address("0x" + f"{17 * i + 3:02x}" * 20)) for i, name in enumerate(small_split.names)
    }
    plain = run_plain_fedavg(small_split, SPEC, rounds, strategy, seed, participant_keys=addresses)

    model_blob = encode_model(
        genesis_params(SPEC, seed), ModelMeta(RoundId(0), GENESIS_BASE, COORDINATOR, 0, SPEC, GENESIS_STRATEGY)
    )
    total = sum(len(s) for s in small_split.shards)
    for r in range(rounds):
        base_hash = Digest(hashlib.sha256(model_blob).digest())
        base = decode_model(model_blob, spec=SPEC).params
        blobs = {}
        for shard in small_split.shards:  # participants, in no particular order
            update = local_round(
                base,
                shard,
                spec=SPEC,
                strategy=strategy,
                default=TrainConfig(),
                round_id=r,
                seed=seed,
                participant=addresses[shard.name],
            )
            blobs[addresses[shard.name]] = encode_update(
                update.delta, UpdateMeta(RoundId(r), base_hash, addresses[shard.name], update.num_samples)
            )

        def recorded(blobs: dict[Address, bytes] = blobs) -> Iterator[UpdateItem]:
            for who in sorted(blobs, key=str.lower):  # the ledger's order
                decoded = decode_update(blobs[who], expected_shapes=param_shapes(SPEC))
                yield who, decoded.meta.samples, decoded.delta

        params = strategy.aggregate(base, recorded(), total_samples=total)
        model_blob = encode_model(params, ModelMeta(RoundId(r), base_hash, COORDINATOR, total, SPEC, strategy.name))

    final = decode_model(model_blob, spec=SPEC).params
    assert all(torch.equal(final[n], plain.params[n]) for n in final)
