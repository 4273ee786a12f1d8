"""Step 4 of verification without re-encoding: the stored aggregate compared with the recomputed one.

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
from eth_utils.address import to_checksum_address

from fedchain.errors import CodecError
from fedchain.fl.codec import decode_model, decode_update, model_blob_matches
from fedchain.fl.schema import Schema
from fedchain.hashing import sha256, to_hex
from fedchain.protocol import Manifest, Rules, VerifiedModel, verify_round
from fedchain.protocol.blobs import (
    aggregate_blob,
    aggregate_matches,
    genesis_blob,
    stored_aggregate_arrays,
    update_blob,
)
from fedchain.records import AggregateRecord, RoundHistory, RoundOpened, RoundState, RoundStatus, UpdateRecord
from fedchain.storage import LocalBlockStore
from fedchain.storage._cid import block_key, parse_cid
from fedchain.storage._unixfs import iter_dag
from fedchain.types import Address, Cid, Digest, RoundId

# ~80k parameters: blobs of a root over two leaves
SCHEMA = Schema.from_shapes({"embedding.weight": (10_000, 8), "fc.bias": (22,), "fc.weight": (22, 8)})
COORDINATOR = Address(to_checksum_address("0x" + "c0" * 20))
PARTICIPANTS = sorted(
    (Address(to_checksum_address("0x" + f"{i:02x}" * 20)) for i in (0x11, 0x22, 0x33)), key=lambda a: int(a, 16)
)
MANIFEST = Manifest(task_name="test", task_version="1", schema=SCHEMA, model="a test model", min_updates=3)
RULES = Rules.of(MANIFEST, coordinator=COORDINATOR, manifest_cid=Cid("QmManifest"))


@dataclasses.dataclass
class Round:
    store: LocalBlockStore
    history: RoundHistory
    base_hash: Digest
    base: dict[str, np.ndarray]
    aggregate: dict[str, np.ndarray]
    total: int

    def with_aggregate(self, digest: Digest, cid: Cid) -> RoundHistory:
        assert self.history.aggregate is not None
        agg = dataclasses.replace(self.history.aggregate, aggregate_hash=digest, cid=cid)
        return dataclasses.replace(self.history, aggregate=agg)

    def encode(self, params: Mapping[str, np.ndarray]) -> bytes:
        return aggregate_blob(params, RULES, round_id=0, base_hash=self.base_hash, num_samples=self.total)

    @property
    def recorded(self) -> AggregateRecord:
        assert self.history.aggregate is not None
        return self.history.aggregate


def _params(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: (rng.standard_normal(s) * scale).astype(np.float32) for n, s in SCHEMA.shapes.items()}


def _build(tmp_path: Path, *, zero_first: bool = False) -> Round:
    store = LocalBlockStore(tmp_path / "store")
    base = _params(5)
    first = min(base)
    if zero_first:  # an element that aggregates to exactly +0.0
        base[first].reshape(-1)[0] = 0.0
    genesis = genesis_blob(base, model=MANIFEST.model, sender=COORDINATOR)
    base_hash, base_cid = sha256(genesis), store.put(genesis)
    updates, items = [], []
    for i, who in enumerate(PARTICIPANTS):
        delta = _params(10 + i, 1e-2)
        if zero_first:
            delta[first].reshape(-1)[0] = 0.0
        blob = update_blob(delta, round_id=0, base_hash=base_hash, sender=who, num_samples=10 * (i + 1))
        updates.append(UpdateRecord(RoundId(0), who, sha256(blob), store.put(blob), 10 * (i + 1), 2 + i, "0x"))
        items.append((who, 10 * (i + 1), delta))
    total = sum(u.num_samples for u in updates)
    aggregate = dict(RULES.strategy.aggregate(base, items, total_samples=total))
    blob = aggregate_blob(aggregate, RULES, round_id=0, base_hash=base_hash, num_samples=total)
    record = AggregateRecord(RoundId(0), sha256(blob), store.put(blob), tuple(PARTICIPANTS), 9, "0x")
    state = RoundState(RoundId(0), RoundStatus.FINALIZED, 0, 3, 3, 1, 8, 9)
    opened = RoundOpened(RoundId(0), base_hash, base_cid, 0, 3, 1, "0x")
    return Round(store, RoundHistory(state, opened, tuple(updates), record), base_hash, base, aggregate, total)


#: The ``hold`` the tests' verifications use: 0 streams the updates into the aggregation; 8 holds them
#: and compares the recomputation with the stored aggregate without writing it (``FedAvg.matches``).
_HOLD = [0]


@pytest.fixture(autouse=True, params=[0, 8], ids=["streamed", "held"])
def _hold(request: pytest.FixtureRequest) -> object:
    _HOLD[0] = request.param
    yield
    _HOLD[0] = 0


def _verify(
    rnd: Round, history: RoundHistory | None = None, base: VerifiedModel | None = None
) -> tuple[object, VerifiedModel | None]:
    return verify_round(history or rnd.history, rnd.store, RULES, expected_base=rnd.base_hash, base=base, hold=_HOLD[0])


def _failure(verdict: object) -> tuple[str, str | None, str | None]:
    [failure] = verdict.failures  # type: ignore[attr-defined]
    return failure.what, failure.expected, failure.actual


def _bytes(params: Mapping[str, np.ndarray]) -> dict[str, bytes]:
    return {n: np.ascontiguousarray(a).tobytes() for n, a in params.items()}


def test_a_round_that_verifies_hands_its_aggregate_on(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    verdict, model = _verify(rnd)
    assert verdict.ok and verdict.failures == ()  # type: ignore[attr-defined]
    assert model is not None and (model.cid, model.digest) == (rnd.recorded.cid, rnd.recorded.aggregate_hash)
    stored = decode_model(rnd.store.get(rnd.recorded.cid), schema=SCHEMA).params
    assert _bytes(model.params) == _bytes(stored) == _bytes(rnd.aggregate)


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


def test_one_ulp_in_one_element_fails_as_recomputed(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    nudged = {n: a.copy() for n, a in rnd.aggregate.items()}
    flat = nudged["fc.bias"].reshape(-1)
    flat[5] = np.nextafter(flat[5], np.float32(np.inf), dtype=np.float32)
    assert float(np.max(np.abs(nudged["fc.bias"] - rnd.aggregate["fc.bias"]))) < 1e-6  # equal to any tolerance
    forged = rnd.encode(nudged)
    verdict, model = _verify(rnd, rnd.with_aggregate(sha256(forged), rnd.store.put(forged)))
    assert model is None
    assert _failure(verdict) == ("aggregate (recomputed)", to_hex(sha256(forged)), to_hex(rnd.recorded.aggregate_hash))


def test_a_sign_of_zero_is_a_difference(tmp_path: Path) -> None:
    rnd = _build(tmp_path, zero_first=True)
    first = min(rnd.aggregate)
    zero = rnd.aggregate[first].reshape(-1)[0]
    assert zero == 0.0 and not np.signbit(zero)
    negative = {n: a.copy() for n, a in rnd.aggregate.items()}
    negative[first].reshape(-1)[0] = -0.0
    assert all(np.array_equal(negative[n], rnd.aggregate[n]) for n in negative)  # equal as numbers, not as bytes
    forged = rnd.encode(negative)
    verdict, _ = _verify(rnd, rnd.with_aggregate(sha256(forged), rnd.store.put(forged)))
    assert _failure(verdict)[0] == "aggregate (recomputed)"


def test_the_right_digest_at_a_cid_holding_other_bytes_fails_as_the_blob_hash(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    other = rnd.encode(_params(98))
    verdict, _ = _verify(rnd, rnd.with_aggregate(rnd.recorded.aggregate_hash, rnd.store.put(other)))
    assert _failure(verdict) == ("aggregate blob hash", to_hex(rnd.recorded.aggregate_hash), to_hex(sha256(other)))


def test_an_aggregate_missing_from_the_store_fails_as_the_blob(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    missing = LocalBlockStore(tmp_path / "elsewhere").put(b"never stored here")
    verdict, _ = _verify(rnd, rnd.with_aggregate(rnd.recorded.aggregate_hash, missing))
    what, expected, actual = _failure(verdict)
    assert (what, expected) == ("aggregate blob", f"{to_hex(rnd.recorded.aggregate_hash)} at {missing}")
    assert actual is not None and "not in the store" in actual


def test_a_damaged_aggregate_block_fails_as_store_damage_naming_the_block(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    cid = rnd.recorded.cid
    leaf = [ref for ref, _ in iter_dag(rnd.store._read_block, parse_cid(cid))][1]
    key = block_key(leaf)
    path = Path(rnd.store.location, "blocks", key[-3:-1], key + ".data")
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    verdict, model = _verify(rnd)
    what, _, actual = _failure(verdict)
    assert model is None and what == "store damage (aggregate)"
    assert actual is not None and "integrity check failed" in actual and str(leaf) in actual


def test_a_verified_base_is_used_only_if_it_is_the_recorded_blob(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    genesis = VerifiedModel(rnd.history.opened.base_cid, rnd.base_hash, rnd.base)
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

    def matches(data: bytes | bytearray, **change: object) -> bool:
        kwargs: dict[str, object] = {"round_id": 0, "base_hash": rnd.base_hash, "num_samples": rnd.total, **change}
        return aggregate_matches(data, rnd.aggregate, RULES, **kwargs)  # type: ignore[arg-type]

    assert matches(blob) and matches(bytearray(blob))
    (header_len,) = struct.unpack_from("<Q", blob)
    data_start = 8 + header_len
    positions = list(range(data_start + 8)) + list(range(data_start, len(blob), 4093)) + [len(blob) - 1]
    for pos in positions:  # every byte of the prefix and header, and data throughout
        damaged = bytearray(blob)
        damaged[pos] ^= 0x20
        assert not matches(damaged), pos
    for other in (blob + b"\0", blob[:-4]):
        assert not matches(other)
    for field, value in (("round_id", 1), ("num_samples", rnd.total + 1), ("base_hash", sha256(b"x"))):
        assert not matches(blob, **{field: value})
    other_coordinator = dataclasses.replace(RULES, coordinator=PARTICIPANTS[0])
    assert not aggregate_matches(
        blob, rnd.aggregate, other_coordinator, round_id=0, base_hash=rnd.base_hash, num_samples=rnd.total
    )
    header = json.loads(blob[8:data_start])
    assert header["__metadata__"]["strategy"] == RULES.strategy.name


def test_model_blob_matches_refuses_what_encoding_refuses(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    blob = rnd.encode(rnd.aggregate)
    bad = {n: a.copy() for n, a in rnd.aggregate.items()}
    bad[min(bad)].reshape(-1)[3] = np.nan
    with pytest.raises(CodecError) as encoding:
        rnd.encode(bad)
    meta = decode_model(blob, schema=SCHEMA).meta
    with pytest.raises(CodecError) as matching:
        model_blob_matches(blob, bad, meta)
    assert matching.value.reason == encoding.value.reason == "non-finite"
    with pytest.raises(CodecError, match="float32"):
        model_blob_matches(blob, {n: a.astype(np.float64) for n, a in rnd.aggregate.items()}, meta)


def test_a_handed_over_buffer_backs_the_decoded_arrays(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    blob = bytes(rnd.store.get(rnd.history.updates[0].cid))
    copied = decode_update(blob, schema=SCHEMA).delta
    buffer = bytearray(blob)
    shared = decode_update(buffer, schema=SCHEMA, copy=False).delta
    assert _bytes(shared) == _bytes(copied)
    data = np.frombuffer(buffer, dtype=np.uint8)
    assert any(np.shares_memory(a, data) for a in shared.values())
    assert not any(
        np.shares_memory(a, np.frombuffer(blob, dtype=np.uint8))
        for a in decode_update(blob, schema=SCHEMA, copy=False).delta.values()
    )


class _Seen:
    """The federation's strategy, noting whether it was handed the updates together or one at a time."""

    def __init__(self, inner: object) -> None:
        self.inner, self.kinds = inner, []

    def aggregate(self, base: object, updates: object, **kwargs: object) -> object:
        self.kinds.append(type(updates).__name__)
        return self.inner.aggregate(base, updates, **kwargs)  # type: ignore[attr-defined]

    def matches(self, base: object, updates: object, **kwargs: object) -> object:
        self.kinds.append(f"matches {type(updates).__name__}")
        return self.inner.matches(base, updates, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("hold", [0, 2, 3, 10])
def test_holding_a_small_rounds_updates_aggregates_them_together_to_the_same_bits(tmp_path: Path, hold: int) -> None:
    rnd = _build(tmp_path)
    seen = _Seen(RULES.strategy)
    rules = dataclasses.replace(RULES, strategy=seen)  # type: ignore[arg-type]
    verdict, model = verify_round(rnd.history, rnd.store, rules, expected_base=rnd.base_hash, hold=hold)
    # held: compared with the stored aggregate without writing it, and never aggregated when it matches
    assert seen.kinds == (["matches list"] if hold >= len(PARTICIPANTS) else ["generator"])
    assert verdict.ok and model is not None
    assert _bytes(model.params) == _bytes(rnd.aggregate)
    reference, _ = _verify(rnd)
    assert verdict == reference


def test_a_held_round_with_an_aggregate_one_ulp_off_fails_as_recomputed(tmp_path: Path) -> None:
    rnd = _build(tmp_path)
    nudged = {n: a.copy() for n, a in rnd.aggregate.items()}
    flat = nudged["fc.bias"].reshape(-1)
    flat[0] = np.nextafter(flat[0], np.float32(np.inf))
    wrong = rnd.encode(nudged)
    history = rnd.with_aggregate(sha256(wrong), rnd.store.put(wrong))
    verdict, model = verify_round(history, rnd.store, RULES, expected_base=rnd.base_hash, hold=3)
    assert model is None
    assert _failure(verdict) == _failure(_verify(rnd, history)[0])


def test_the_stored_aggregates_arrays_are_given_only_for_exactly_the_header_aggregate_blob_writes(
    tmp_path: Path,
) -> None:
    rnd = _build(tmp_path)
    blob = rnd.encode(rnd.aggregate)

    def arrays(data: bytes | bytearray, **change: object) -> dict[str, np.ndarray] | None:
        kwargs: dict[str, object] = {"round_id": 0, "base_hash": rnd.base_hash, "num_samples": rnd.total, **change}
        return stored_aggregate_arrays(data, RULES, **kwargs)  # type: ignore[arg-type]

    got = arrays(bytearray(blob))
    assert got is not None and _bytes(got) == _bytes(rnd.aggregate)
    assert all(not a.flags.writeable for a in got.values())  # the verified model is not changed through them
    (header_len,) = struct.unpack_from("<Q", blob)
    for pos in range(8 + header_len):  # every byte of the prefix and the header
        damaged = bytearray(blob)
        damaged[pos] ^= 0x20
        assert arrays(damaged) is None, pos
    damaged = bytearray(blob)
    damaged[8 + header_len] ^= 0x20  # a value: the header is still the one aggregate_blob writes
    assert arrays(damaged) is not None
    for other in (blob + b"\0", blob[:-4]):
        assert arrays(other) is None
    for field, value in (("round_id", 1), ("num_samples", rnd.total + 1), ("base_hash", sha256(b"x"))):
        assert arrays(blob, **{field: value}) is None
