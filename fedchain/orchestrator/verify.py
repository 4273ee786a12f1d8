"""Verification of a round against the ledger: what everybody runs before accepting a model.

For round ``r`` with recorded history ``H`` (from :meth:`Ledger.round_history`):

1. lineage: the round's base is the genesis model (r = 0) or round r-1's aggregate, and the
   base blob fetched by its CID hashes to the recorded digest;
2. every recorded update is fetched by CID, re-hashed against its recorded digest, and
   decoded with every check of :func:`fedchain.fl.decode_update` (shapes and dtypes of the
   base model, finite values, norm bound, header bound to this round, base, sender and
   declared sample count). An update failing any check is *excluded*, with its reason;
3. identical digests from two senders are flagged: the blob binds its sender, so the copy
   (whose header names someone else) is excluded as ``copied``;
4. the aggregate's included list must be exactly the valid updates: a coordinator that
   omits a valid update or includes an invalid one fails verification;
5. the aggregate is recomputed from the base and the valid updates with the federation's
   strategy, encoded canonically, and must hash to the recorded aggregate digest, bit for
   bit; the aggregate blob fetched by its CID must hash to it as well.

Exclusions are normal (they are what protects the federation); any mismatch in steps 1, 4 or
5, or an unreachable or corrupted blob the ledger points to, is a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from torch import Tensor

from fedchain.errors import CodecError, FedchainError, StorageError, VerificationError
from fedchain.fl import DecodedUpdate, ModelSpec, Strategy
from fedchain.hashing import sha256, short, to_hex
from fedchain.orchestrator._blobs import (
    aggregate_blob,
    read_model,
    read_update,
)
from fedchain.records import RoundHistory, RoundStatus, UpdateRecord
from fedchain.storage import BlobStore
from fedchain.types import Address, Digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exclusion:
    """An update recorded on the ledger but left out of the aggregate, and why."""

    participant: Address
    reason: str
    detail: str


@dataclass(frozen=True)
class RoundVerdict:
    """The outcome of verifying one round."""

    round_id: int
    status: RoundStatus
    included: tuple[Address, ...]
    excluded: tuple[Exclusion, ...]
    missing: tuple[Address, ...]
    aggregate_hash: Digest | None
    failures: tuple[VerificationError, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether the round verified (exclusions are fine, failures are not)."""
        return not self.failures

    def raise_for_failure(self) -> None:
        """Raise the first failure, if any."""
        if self.failures:
            raise self.failures[0]


def screen_updates(
    history: RoundHistory,
    store: BlobStore,
    *,
    spec: ModelSpec,
    base_hash: Digest,
    max_blob_size: int,
    max_update_norm: float | None,
) -> tuple[list[UpdateRecord], list[Exclusion]]:
    """Sort the recorded updates of a round into valid ones and exclusions (no deltas kept)."""
    valid: list[UpdateRecord] = []
    excluded: list[Exclusion] = []
    for record, outcome in _check_updates(history, store, spec=spec, base_hash=base_hash, max_blob_size=max_blob_size, max_update_norm=max_update_norm, keep=False):
        if isinstance(outcome, Exclusion):
            excluded.append(outcome)
        else:
            valid.append(record)
    return valid, excluded


def iter_valid_updates(
    history: RoundHistory,
    store: BlobStore,
    records: list[UpdateRecord],
    *,
    spec: ModelSpec,
    base_hash: Digest,
    max_blob_size: int,
    max_update_norm: float | None,
) -> Iterator[tuple[Address, int, Mapping[str, Tensor]]]:
    """Fetch and decode ``records`` (already screened) one at a time, for streaming aggregation."""
    for record in records:
        decoded = _fetch_update(record, store, spec=spec, base_hash=base_hash, max_blob_size=max_blob_size, max_update_norm=max_update_norm)
        yield record.participant, record.num_samples, decoded.delta


def _check_updates(
    history: RoundHistory,
    store: BlobStore,
    *,
    spec: ModelSpec,
    base_hash: Digest,
    max_blob_size: int,
    max_update_norm: float | None,
    keep: bool,
) -> Iterator[tuple[UpdateRecord, Exclusion | DecodedUpdate]]:
    by_digest: dict[bytes, list[Address]] = {}
    for record in history.updates:
        by_digest.setdefault(bytes(record.update_hash), []).append(record.participant)
    for record in history.updates:
        others = [p for p in by_digest[bytes(record.update_hash)] if p != record.participant]
        try:
            decoded = _fetch_update(record, store, spec=spec, base_hash=base_hash, max_blob_size=max_blob_size, max_update_norm=max_update_norm)
        except CodecError as err:
            if others and err.reason == "sender":
                # The blob binds its sender: this account submitted someone else's update.
                yield record, Exclusion(record.participant, "copied", f"same update digest {short(record.update_hash)} as {', '.join(others)}; {err.detail}")
            else:
                yield record, Exclusion(record.participant, err.reason, err.detail)
            continue
        except StorageError as err:
            yield record, Exclusion(record.participant, "unavailable", str(err))
            continue
        yield record, decoded
        del decoded


def _fetch_update(
    record: UpdateRecord,
    store: BlobStore,
    *,
    spec: ModelSpec,
    base_hash: Digest,
    max_blob_size: int,
    max_update_norm: float | None,
) -> DecodedUpdate:
    blob = store.get(record.cid, max_size=max_blob_size)
    actual = sha256(blob)
    if actual != record.update_hash:
        raise CodecError("hash", f"blob at {record.cid} hashes to {to_hex(actual)}, the ledger records {to_hex(record.update_hash)}")
    decoded: DecodedUpdate = read_update(
        blob,
        spec=spec,
        max_size=max_blob_size,
        round_id=record.round_id,
        base_hash=base_hash,
        sender=record.participant,
        num_samples=record.num_samples,
        max_norm=max_update_norm,
    )
    return decoded


def load_model(store: BlobStore, cid: str, digest: Digest, *, spec: ModelSpec | None, max_blob_size: int, round_id: int, what: str) -> tuple[ModelSpec, dict[str, Tensor]]:
    """Fetch a model blob, check it against its recorded digest and decode it.

    Raises
    ------
    VerificationError
        If the blob cannot be fetched, does not hash to ``digest``, or is not a valid model.
    """
    try:
        blob = store.get(cid, max_size=max_blob_size)
    except StorageError as err:
        raise VerificationError(round_id, what, expected=f"{to_hex(digest)} at {cid}", actual=str(err)) from err
    actual = sha256(blob)
    if actual != digest:
        raise VerificationError(round_id, f"{what} hash", expected=to_hex(digest), actual=to_hex(actual))
    try:
        model = read_model(blob, spec=spec, max_size=max_blob_size)
    except CodecError as err:
        raise VerificationError(round_id, what, expected="a valid model blob", actual=str(err)) from err
    return model.meta.spec, dict(model.params)


def verify_round(
    history: RoundHistory,
    store: BlobStore,
    strategy: Strategy,
    *,
    expected_base: Digest,
    coordinator: Address,
    registered: tuple[Address, ...] = (),
    spec: ModelSpec | None = None,
    max_blob_size: int,
    max_update_norm: float | None = None,
) -> RoundVerdict:
    """Verify one round as described in the module docstring.

    Parameters
    ----------
    history:
        What the ledger recorded about the round.
    store:
        Where its blobs are.
    strategy:
        The federation's aggregation strategy (fixed when the ledger was deployed).
    expected_base:
        The genesis digest for round 0, else the previous round's aggregate digest.
    coordinator:
        The ledger's coordinator: the sender bound into aggregate blobs.
    registered:
        Participants registered at the time (to report who did not submit).
    spec:
        The model's spec, if already known (else read from the base model).
    """
    r = int(history.state.round_id)
    failures: list[VerificationError] = []
    submitted = {u.participant for u in history.updates}
    missing = tuple(a for a in registered if a not in submitted)
    agg = history.aggregate

    def verdict(included: tuple[Address, ...] = (), excluded: tuple[Exclusion, ...] = ()) -> RoundVerdict:
        return RoundVerdict(r, history.state.status, included, excluded, missing, agg.aggregate_hash if agg else None, tuple(failures))

    if history.opened.base_hash != expected_base:
        failures.append(VerificationError(r, "lineage", expected=to_hex(expected_base), actual=to_hex(history.opened.base_hash)))
        return verdict()
    try:
        spec, base = load_model(store, history.opened.base_cid, expected_base, spec=spec, max_blob_size=max_blob_size, round_id=r, what="base model")
    except VerificationError as err:
        failures.append(err)
        return verdict()

    if agg is None:
        screened_valid, screened_out = screen_updates(history, store, spec=spec, base_hash=expected_base, max_blob_size=max_blob_size, max_update_norm=max_update_norm)
        for ex in screened_out:
            logger.info("round %d: excluded %s: %s: %s", r, ex.participant, ex.reason, ex.detail)
        return verdict(tuple(u.participant for u in screened_valid), tuple(screened_out))

    # One pass over the updates: each blob is fetched, hashed and checked once, and the ones
    # the coordinator included are fed to the aggregation as they come (in participant order,
    # one decoded update alive at a time). If the screening then disagrees with the recorded
    # inclusion list, that is the failure and the aggregate computed on the way is discarded.
    recorded = set(agg.included)
    total = sum(u.num_samples for u in history.updates if u.participant in recorded)
    valid_records: list[UpdateRecord] = []
    exclusions: list[Exclusion] = []
    screened: list[bool] = []

    def included_updates() -> Iterator[tuple[Address, int, Mapping[str, Tensor]]]:
        for record, outcome in _check_updates(history, store, spec=spec, base_hash=expected_base, max_blob_size=max_blob_size, max_update_norm=max_update_norm, keep=True):
            if isinstance(outcome, Exclusion):
                exclusions.append(outcome)
                continue
            valid_records.append(record)
            if record.participant in recorded:
                yield record.participant, record.num_samples, outcome.delta
            del outcome
        screened.append(True)

    aggregate_error: FedchainError | None = None
    blob: bytes | None = None
    updates = included_updates()
    try:
        params = strategy.aggregate(base, updates, total_samples=total)
        blob = aggregate_blob(params, spec=spec, strategy=strategy, round_id=r, base_hash=expected_base, sender=coordinator, num_samples=total)
        del params
    except FedchainError as err:
        aggregate_error = err
    for _ in updates:  # finish screening if the aggregation stopped early
        pass
    if not screened and aggregate_error is not None:
        raise aggregate_error  # the screening itself failed (not a mismatch): as screen_updates would
    for ex in exclusions:
        logger.info("round %d: excluded %s: %s: %s", r, ex.participant, ex.reason, ex.detail)
    included = tuple(u.participant for u in valid_records)
    excluded = tuple(exclusions)

    for u in valid_records:
        if u.participant not in recorded:
            failures.append(VerificationError(r, "inclusion (valid update omitted)", participant=u.participant, expected="included", actual="omitted"))
    for p in agg.included:
        if p not in included:
            why = next((f"{e.reason}: {e.detail}" for e in excluded if e.participant == p), "no recorded update")
            failures.append(VerificationError(r, "inclusion (invalid update included)", participant=p, expected="excluded", actual=f"included ({why})"))
    if failures:
        return verdict(included, excluded)
    if aggregate_error is not None or blob is None:
        failures.append(VerificationError(r, "aggregate", expected="recomputable aggregate", actual=str(aggregate_error)))
        return verdict(included, excluded)
    recomputed = sha256(blob)
    if recomputed != agg.aggregate_hash:
        failures.append(VerificationError(r, "aggregate (recomputed)", expected=to_hex(agg.aggregate_hash), actual=to_hex(recomputed)))
        return verdict(included, excluded)
    try:
        stored = store.get(agg.cid, max_size=max_blob_size)
    except StorageError as err:
        failures.append(VerificationError(r, "aggregate blob", expected=f"{to_hex(agg.aggregate_hash)} at {agg.cid}", actual=str(err)))
        return verdict(included, excluded)
    # the recomputed blob hashes to the recorded digest, so equal bytes prove the stored one does too
    if stored != blob:
        failures.append(VerificationError(r, "aggregate blob hash", expected=to_hex(agg.aggregate_hash), actual=to_hex(sha256(stored))))
    return verdict(included, excluded)


__all__ = ["Exclusion", "RoundVerdict", "iter_valid_updates", "load_model", "screen_updates", "verify_round"]
