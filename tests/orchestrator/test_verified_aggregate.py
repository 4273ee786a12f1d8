"""Step 5 of verification without re-encoding: the stored aggregate compared with the recomputed one.

A round is built here straight from records (no chain: what is tested is what the verifier
does with a history and a store). Every way the aggregate can be wrong must still be reported
with the check and the digests it was always reported with; a round that verifies hands its
aggregate on as the next round's base.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from eth_utils.address import to_checksum_address

from fedchain.errors import CodecError
from fedchain.fl import FedAvg, ModelSpec, param_shapes
from fedchain.fl.codec import decode_model, decode_update, model_blob_matches
from fedchain.hashing import sha256, to_hex
from fedchain.orchestrator._blobs import (
    aggregate_blob,
    aggregate_matches,
    genesis_blob,
    update_blob,
)
from fedchain.orchestrator.verify import (
    VerifiedModel,
    verify_round,
    verify_round_chained,
)
from fedchain.records import (
    AggregateRecord,
    RoundHistory,
    RoundOpened,
    RoundState,
    RoundStatus,
    UpdateRecord,
)
from fedchain.storage import LocalBlockStore
from fedchain.storage._cid import block_key, parse_cid
from fedchain.storage._unixfs import iter_dag
from fedchain.types import Address, Cid, Digest, RoundId

SPEC = ModelSpec(num_buckets=10_000, dim=8)  # ~80k parameters: blobs of a root over two leaves
COORDINATOR = Address(to_checksum_address("0x" + "c0" * 20))
PARTICIPANTS = sorted(
    (Address(to_checksum_address("0x" + f"{i:02x}" * 20)) for i in (0x11, 0x22, 0x33)), key=lambda a: int(a, 16)
)
STRATEGY = FedAvg()


@dataclasses.dataclass
class Round:
    store: LocalBlockStore
    history: RoundHistory
    base_hash: Digest
    base: dict[str, torch.Tensor]
    aggregate: dict[str, torch.Tensor]
    total: int

    def with_aggregate(self, digest: Digest, cid: Cid) -> RoundHistory:
        agg = dataclasses.replace(self.history.aggregate, aggregate_hash=digest, cid=cid)  # type: ignore[type-var]
        return dataclasses.replace(
            self.history, aggregate=agg, state=dataclasses.replace(self.history.state, aggregate_hash=digest)
        )

    def encode(self, params: Mapping[str, torch.Tensor]) -> bytes:
        return aggregate_blob(
            params,
            spec=SPEC,
            strategy=STRATEGY,
            round_id=0,
            base_hash=self.base_hash,
            sender=COORDINATOR,
            num_samples=self.total,
        )


def _params(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) * scale for n, s in param_shapes(SPEC).items()}


def _build(tmp_path: Path, *, zero_first: bool = False) -> Round:
    store = LocalBlockStore(tmp_path / "store")
    genesis = genesis_blob(SPEC, seed=5, sender=COORDINATOR)
    base = {n: t.clone() for n, t in decode_model(genesis, spec=SPEC).params.items()}
    if zero_first:  # an element that aggregates to exactly +0.0
        first = min(base)
        base[first].view(-1)[0] = 0.0
        genesis = aggregate_blob(
            base, spec=SPEC, strategy=STRATEGY, round_id=0, base_hash=bytes(32), sender=COORDINATOR, num_samples=0
        )
    base_hash, base_cid = sha256(genesis), store.put(genesis)
    updates, items = [], []
    for i, who in enumerate(PARTICIPANTS):
        delta = _params(10 + i, 1e-2)
        if zero_first:
            delta[min(delta)].view(-1)[0] = 0.0
        blob = update_blob(delta, round_id=0, base_hash=base_hash, sender=who, num_samples=10 * (i + 1))
        updates.append(UpdateRecord(RoundId(0), who, sha256(blob), store.put(blob), 10 * (i + 1), 2 + i, "0x"))
        items.append((who, 10 * (i + 1), delta))
    total = sum(u.num_samples for u in updates)
    aggregate = dict(STRATEGY.aggregate(base, items, total_samples=total))
    blob = aggregate_blob(
        aggregate, spec=SPEC, strategy=STRATEGY, round_id=0, base_hash=base_hash, sender=COORDINATOR, num_samples=total
    )
    record = AggregateRecord(RoundId(0), sha256(blob), store.put(blob), tuple(PARTICIPANTS), 9, "0x")
    state = RoundState(RoundId(0), RoundStatus.FINALIZED, 0, 3, 3, 1, 9, record.aggregate_hash)
    opened = RoundOpened(RoundId(0), base_hash, base_cid, 0, 3, 1, "0x")
    return Round(store, RoundHistory(state, opened, tuple(updates), record), base_hash, base, aggregate, total)


def _verify(
    rnd: Round, history: RoundHistory | None = None, base: VerifiedModel | None = None
) -> tuple[object, VerifiedModel | None]:
    return verify_round_chained(
        history or rnd.history,
        rnd.store,
        STRATEGY,
        base=base,
        expected_base=rnd.base_hash,
        coordinator=COORDINATOR,
        spec=SPEC,
        max_blob_size=1 << 24,
    )


def _failure(verdict: object) -> tuple[str, str | None, str | None]:
    [failure] = verdict.failures  # type: ignore[attr-defined]
    return failure.what, failure.expected, failure.actual


def test_a_round_that_verifies_hands_its_aggregate_on(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    verdict, model = _verify(rnd)
    assert verdict.ok  # type: ignore[attr-defined]
    assert model is not None and (model.cid, model.digest, model.spec) == (
        rnd.history.aggregate.cid,
        rnd.history.aggregate.aggregate_hash,
        SPEC,
    )  # type: ignore[union-attr]
    stored = decode_model(rnd.store.get(rnd.history.aggregate.cid), spec=SPEC).params  # type: ignore[union-attr]
    assert {n: t.numpy().tobytes() for n, t in model.params.items()} == {
        n: t.numpy().tobytes() for n, t in stored.items()
    }
    assert verify_round(
        rnd.history,
        rnd.store,
        STRATEGY,
        expected_base=rnd.base_hash,
        coordinator=COORDINATOR,
        spec=SPEC,
        max_blob_size=1 << 24,
    ).ok


def test_a_recorded_aggregate_that_is_not_the_recomputation_fails_as_recomputed(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    other = rnd.encode(_params(99))
    verdict, model = _verify(rnd, rnd.with_aggregate(sha256(other), rnd.store.put(other)))
    assert model is None
    assert _failure(verdict) == (
        "aggregate (recomputed)",
        to_hex(sha256(other)),
        to_hex(sha256(rnd.encode(rnd.aggregate))),
    )


def test_a_sign_of_zero_is_a_difference(tmp_path: Path) -> None:
    rnd = _build(tmp_path, zero_first=True)
    first = min(rnd.aggregate)
    assert rnd.aggregate[first].view(-1)[0].item() == 0.0 and not torch.signbit(rnd.aggregate[first].view(-1)[0])
    negative = {n: t.clone() for n, t in rnd.aggregate.items()}
    negative[first].view(-1)[0] = -0.0
    assert all(torch.equal(negative[n], rnd.aggregate[n]) for n in negative)  # equal as numbers, not as bytes
    forged = rnd.encode(negative)
    verdict, _ = _verify(rnd, rnd.with_aggregate(sha256(forged), rnd.store.put(forged)))
    assert _failure(verdict)[0] == "aggregate (recomputed)"


def test_the_right_digest_at_a_cid_holding_other_bytes_fails_as_the_blob_hash(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    other = rnd.encode(_params(98))
    verdict, _ = _verify(rnd, rnd.with_aggregate(rnd.history.aggregate.aggregate_hash, rnd.store.put(other)))  # type: ignore[union-attr]
    assert _failure(verdict) == (
        "aggregate blob hash",
        to_hex(rnd.history.aggregate.aggregate_hash),
        to_hex(sha256(other)),
    )  # type: ignore[union-attr]


def test_an_aggregate_missing_from_the_store_fails_as_the_blob(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    missing = LocalBlockStore(tmp_path / "elsewhere").put(b"never stored here")
    verdict, _ = _verify(rnd, rnd.with_aggregate(rnd.history.aggregate.aggregate_hash, missing))  # type: ignore[union-attr]
    what, expected, actual = _failure(verdict)
    assert (what, expected) == ("aggregate blob", f"{to_hex(rnd.history.aggregate.aggregate_hash)} at {missing}")  # type: ignore[union-attr]
    assert actual is not None and "not in the store" in actual


def test_a_damaged_aggregate_block_fails_naming_the_block(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    cid = rnd.history.aggregate.cid  # type: ignore[union-attr]
    leaf = [ref for ref, _ in iter_dag(rnd.store._read_block, parse_cid(cid))][1]
    key = block_key(leaf)
    path = Path(rnd.store.location, "blocks", key[-3:-1], key + ".data")
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    verdict, model = _verify(rnd)
    what, _, actual = _failure(verdict)
    assert model is None and what == "aggregate blob"
    assert actual is not None and "integrity check failed" in actual and str(leaf) in actual


def test_a_verified_base_is_used_only_if_it_is_the_recorded_blob(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    genesis = VerifiedModel(rnd.history.opened.base_cid, rnd.base_hash, SPEC, rnd.base)
    key = block_key(parse_cid(rnd.history.opened.base_cid))
    Path(rnd.store.location, "blocks", key[-3:-1], key + ".data").unlink()  # the base blob is gone from the store
    verdict, _ = _verify(rnd, base=genesis)
    assert verdict.ok  # type: ignore[attr-defined]
    for wrong in (
        dataclasses.replace(genesis, cid=rnd.history.updates[0].cid),
        dataclasses.replace(genesis, digest=sha256(b"x")),
    ):
        verdict, _ = _verify(rnd, base=wrong)
        assert _failure(verdict)[0] == "base model"  # fetched, and missing


def test_model_blob_matches_exactly_the_encoding(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    blob = rnd.encode(rnd.aggregate)
    assert aggregate_matches(
        blob,
        rnd.aggregate,
        spec=SPEC,
        strategy=STRATEGY,
        round_id=0,
        base_hash=rnd.base_hash,
        sender=COORDINATOR,
        num_samples=rnd.total,
    )
    assert aggregate_matches(
        bytearray(blob),
        rnd.aggregate,
        spec=SPEC,
        strategy=STRATEGY,
        round_id=0,
        base_hash=rnd.base_hash,
        sender=COORDINATOR,
        num_samples=rnd.total,
    )
    (header_len,) = struct.unpack_from("<Q", blob)
    data_start = 8 + header_len
    positions = list(range(data_start + 8)) + list(range(data_start, len(blob), 4093)) + [len(blob) - 1]
    for pos in positions:  # every byte of the prefix and header, and data throughout
        damaged = bytearray(blob)
        damaged[pos] ^= 0x20
        assert not aggregate_matches(
            damaged,
            rnd.aggregate,
            spec=SPEC,
            strategy=STRATEGY,
            round_id=0,
            base_hash=rnd.base_hash,
            sender=COORDINATOR,
            num_samples=rnd.total,
        ), pos
    for other in (blob + b"\0", blob[:-4]):
        assert not aggregate_matches(
            other,
            rnd.aggregate,
            spec=SPEC,
            strategy=STRATEGY,
            round_id=0,
            base_hash=rnd.base_hash,
            sender=COORDINATOR,
            num_samples=rnd.total,
        )
    for field, value in (
        ("round_id", 1),
        ("num_samples", rnd.total + 1),
        ("sender", PARTICIPANTS[0]),
        ("base_hash", sha256(b"x")),
    ):
        kwargs = {
            "spec": SPEC,
            "strategy": STRATEGY,
            "round_id": 0,
            "base_hash": rnd.base_hash,
            "sender": COORDINATOR,
            "num_samples": rnd.total,
            field: value,
        }
        assert not aggregate_matches(blob, rnd.aggregate, **kwargs)  # type: ignore[arg-type]
    header = json.loads(blob[8:data_start])
    assert header["__metadata__"]["strategy"] == STRATEGY.name


def test_model_blob_matches_refuses_what_encoding_refuses(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    blob = rnd.encode(rnd.aggregate)
    bad = {n: t.clone() for n, t in rnd.aggregate.items()}
    bad[min(bad)].view(-1)[3] = float("nan")
    with pytest.raises(CodecError) as encoding:
        rnd.encode(bad)
    meta = decode_model(blob, spec=SPEC).meta
    with pytest.raises(CodecError) as matching:
        model_blob_matches(blob, bad, meta)
    assert matching.value.reason == encoding.value.reason == "non-finite"
    with pytest.raises(CodecError, match="float32"):
        model_blob_matches(blob, {n: t.double() for n, t in rnd.aggregate.items()}, meta)


def test_a_handed_over_buffer_backs_the_decoded_tensors(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    blob = rnd.store.get(rnd.history.updates[0].cid)
    shapes = param_shapes(SPEC)
    copied = decode_update(blob, expected_shapes=shapes).delta
    buffer = bytearray(blob)
    shared = decode_update(buffer, expected_shapes=shapes, copy=False).delta
    assert {n: t.numpy().tobytes() for n, t in shared.items()} == {n: t.numpy().tobytes() for n, t in copied.items()}
    data = np.frombuffer(buffer, dtype=np.uint8)
    assert any(np.shares_memory(t.numpy(), data) for t in shared.values())
    assert not any(
        np.shares_memory(t.numpy(), np.frombuffer(blob, dtype=np.uint8))
        for t in decode_update(blob, expected_shapes=shapes, copy=False).delta.values()
    )
