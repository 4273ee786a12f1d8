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

How it is done, cheaply, without checking less:

- every blob is read with :meth:`BlobStore.get_verified` against the digest the ledger
  records for it: its bytes are hashed once, as they are read, and a blob is never used
  before its digest matched (see :mod:`fedchain.storage._base` for why the ledger's
  sha256, not the CID, is the check that matters);
- step 5 first reads the stored aggregate (checked against the recorded digest as it is
  read) and compares it byte for byte with what encoding the recomputed aggregate would
  produce, without encoding it (:func:`fedchain.fl.codec.model_blob_matches`). If they are
  equal, the recomputed encoding hashes to the recorded digest too (it is the same bytes),
  which is all the old re-encode-and-hash check established; if anything differs or
  cannot be read, the original steps run (encode, hash, fetch, compare), so every
  failure is reported exactly as before;
- :func:`verify_round_chained` takes the round's base as already verified by the caller
  (the previous round's aggregate, or the genesis model) when it is the same CID and
  digest the round records, and returns this round's verified aggregate for the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from torch import Tensor

from fedchain.errors import (
    AggregationError,
    CodecError,
    FedchainError,
    StorageError,
    VerificationError,
)
from fedchain.fl import DecodedUpdate, ModelSpec, Strategy
from fedchain.hashing import sha256, short, to_hex
from fedchain.orchestrator._blobs import (
    aggregate_blob,
    aggregate_matches,
    read_model,
    read_update,
)
from fedchain.records import RoundHistory, RoundStatus, UpdateRecord
from fedchain.storage import BlobStore, DigestMismatchError
from fedchain.types import Address, Cid, Digest

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


@dataclass(frozen=True)
class VerifiedModel:
    """A model blob verified against the ledger in this process, and its parameters.

    Attributes
    ----------
    cid, digest:
        Where the blob is and its recorded sha256.
    spec, params:
        Its shape and (float32) parameters, to be read, not changed.
    """

    cid: Cid
    digest: Digest
    spec: ModelSpec
    params: Mapping[str, Tensor]


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
    for record, outcome in _check_updates(
        history, store, spec=spec, base_hash=base_hash, max_blob_size=max_blob_size, max_update_norm=max_update_norm
    ):
        if isinstance(outcome, Exclusion):
            excluded.append(outcome)
        else:
            valid.append(record)
        del outcome  # not alive while the next blob is read
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
        decoded = _fetch_update(
            record, store, spec=spec, base_hash=base_hash, max_blob_size=max_blob_size, max_update_norm=max_update_norm
        )
        yield record.participant, record.num_samples, decoded.delta
        del decoded  # not alive while the next blob is read


def screen_and_aggregate(
    history: RoundHistory,
    store: BlobStore,
    strategy: Strategy,
    load_base: Callable[[], dict[str, Tensor]],
    *,
    spec: ModelSpec,
    max_blob_size: int,
    max_update_norm: float | None,
) -> tuple[list[UpdateRecord], list[Exclusion], dict[str, Tensor]]:
    """Screen a round's recorded updates and aggregate the valid ones, in one pass over the blobs.

    What the coordinator runs before finalizing. The aggregation weighs each update by
    ``n_k / n`` with ``n`` the valid updates' total, known only once all are screened; the pass
    assumes every recorded update is valid (the usual case) and aggregates as it screens. If any
    is excluded, a second pass aggregates the valid ones with the right ``n``.

    ``load_base()`` gives the round's base parameters, once per pass; the aggregation may let
    them go as soon as its accumulator holds them, so a coordinator never holds the base, the
    accumulator and an update at once.

    Returns
    -------
    tuple
        The valid records (participant order), the exclusions, and the new parameters.
    """
    base_hash = history.opened.base_hash
    valid: list[UpdateRecord] = []
    excluded: list[Exclusion] = []

    checks = _check_updates(
        history, store, spec=spec, base_hash=base_hash, max_blob_size=max_blob_size, max_update_norm=max_update_norm
    )
    updates = _screened_stream(checks, valid, excluded)
    params: dict[str, Tensor] | None = None
    error: AggregationError | None = None
    try:
        params = strategy.aggregate(
            load_base(), updates, total_samples=sum(u.num_samples for u in history.updates), release_base=True
        )
    except AggregationError as err:
        error = err
    for _ in updates:  # finish screening if the aggregation stopped early
        pass
    if excluded:  # the optimistic total was wrong (and the aggregation said so): again, with the valid ones only
        params = None  # not held while the second pass builds its own
        again = iter_valid_updates(
            history,
            store,
            valid,
            spec=spec,
            base_hash=base_hash,
            max_blob_size=max_blob_size,
            max_update_norm=max_update_norm,
        )
        params = strategy.aggregate(
            load_base(), again, total_samples=sum(u.num_samples for u in valid), release_base=True
        )
    elif error is not None:
        raise error  # every update was valid: the failure is the aggregation's own
    assert params is not None
    return valid, excluded, params


def _screened_stream(
    checks: Iterator[tuple[UpdateRecord, Exclusion | DecodedUpdate]],
    valid: list[UpdateRecord],
    excluded: list[Exclusion],
    *,
    include: set[Address] | None = None,
    done: list[bool] | None = None,
) -> Iterator[tuple[Address, int, Mapping[str, Tensor]]]:
    """Sort ``checks`` into ``valid`` and ``excluded`` as they come, yielding the valid updates to aggregate.

    Only participants in ``include`` are yielded (default: every valid one); ``done`` gets a
    ``True`` once every check has been made. One decoded update is alive at a time.
    """
    for record, outcome in checks:
        if isinstance(outcome, Exclusion):
            excluded.append(outcome)
            continue
        valid.append(record)
        delta = outcome.delta
        del outcome
        if include is None or record.participant in include:
            yield record.participant, record.num_samples, delta
        del delta  # not alive while the next blob is read
    if done is not None:
        done.append(True)


def _check_updates(
    history: RoundHistory,
    store: BlobStore,
    *,
    spec: ModelSpec,
    base_hash: Digest,
    max_blob_size: int,
    max_update_norm: float | None,
) -> Iterator[tuple[UpdateRecord, Exclusion | DecodedUpdate]]:
    by_digest: dict[bytes, list[Address]] = {}
    for record in history.updates:
        by_digest.setdefault(bytes(record.update_hash), []).append(record.participant)
    for record in history.updates:
        others = [p for p in by_digest[bytes(record.update_hash)] if p != record.participant]
        try:
            decoded = _fetch_update(
                record,
                store,
                spec=spec,
                base_hash=base_hash,
                max_blob_size=max_blob_size,
                max_update_norm=max_update_norm,
            )
        except CodecError as err:
            if others and err.reason == "sender":
                # The blob binds its sender: this account submitted someone else's update.
                yield (
                    record,
                    Exclusion(
                        record.participant,
                        "copied",
                        f"same update digest {short(record.update_hash)} as {', '.join(others)}; {err.detail}",
                    ),
                )
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
    try:
        blob = store.get_verified(record.cid, record.update_hash, max_size=max_blob_size)
    except DigestMismatchError as err:
        raise CodecError(
            "hash",
            f"blob at {record.cid} hashes to {to_hex(err.actual)}, the ledger records {to_hex(record.update_hash)}",
        ) from None
    decoded: DecodedUpdate = read_update(
        blob,
        spec=spec,
        max_size=max_blob_size,
        round_id=record.round_id,
        base_hash=base_hash,
        sender=record.participant,
        num_samples=record.num_samples,
        max_norm=max_update_norm,
        copy=False,  # the tensors may keep the fresh buffer: one copy of the blob, not two
    )
    return decoded


def load_model(
    store: BlobStore, cid: str, digest: Digest, *, spec: ModelSpec | None, max_blob_size: int, round_id: int, what: str
) -> tuple[ModelSpec, dict[str, Tensor]]:
    """Fetch a model blob, check it against its recorded digest and decode it.

    Raises
    ------
    VerificationError
        If the blob cannot be fetched, does not hash to ``digest``, or is not a valid model.
    """
    try:
        blob = store.get_verified(cid, digest, max_size=max_blob_size)
    except DigestMismatchError as err:
        raise VerificationError(round_id, f"{what} hash", expected=to_hex(digest), actual=to_hex(err.actual)) from None
    except StorageError as err:
        raise VerificationError(round_id, what, expected=f"{to_hex(digest)} at {cid}", actual=str(err)) from err
    try:
        model = read_model(blob, spec=spec, max_size=max_blob_size, copy=False)
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
    verdict, _ = verify_round_chained(
        history,
        store,
        strategy,
        base=None,
        expected_base=expected_base,
        coordinator=coordinator,
        registered=registered,
        spec=spec,
        max_blob_size=max_blob_size,
        max_update_norm=max_update_norm,
    )
    return verdict


def verify_round_chained(
    history: RoundHistory,
    store: BlobStore,
    strategy: Strategy,
    *,
    base: VerifiedModel | None,
    expected_base: Digest,
    coordinator: Address,
    registered: tuple[Address, ...] = (),
    spec: ModelSpec | None = None,
    max_blob_size: int,
    max_update_norm: float | None = None,
) -> tuple[RoundVerdict, VerifiedModel | None]:
    """:func:`verify_round`, for a caller verifying rounds one after the other (an audit).

    Parameters
    ----------
    base:
        A model the caller verified before, normally the previous round's aggregate (or
        the genesis model). It is used as the round's base, instead of fetching and
        checking the same blob again, only if it is the very blob the round records:
        the same CID and the same digest.
    history, store, strategy, expected_base, coordinator, registered, spec, max_blob_size, max_update_norm:
        As for :func:`verify_round`.

    Returns
    -------
    tuple
        The verdict, and the round's aggregate as a :class:`VerifiedModel` if the round
        verified (``None`` otherwise: the next round then fetches its base itself).
    """
    r = int(history.state.round_id)
    failures: list[VerificationError] = []
    submitted = {u.participant for u in history.updates}
    missing = tuple(a for a in registered if a not in submitted)
    agg = history.aggregate

    def verdict(included: tuple[Address, ...] = (), excluded: tuple[Exclusion, ...] = ()) -> RoundVerdict:
        return RoundVerdict(
            r, history.state.status, included, excluded, missing, agg.aggregate_hash if agg else None, tuple(failures)
        )

    if history.opened.base_hash != expected_base:
        failures.append(
            VerificationError(r, "lineage", expected=to_hex(expected_base), actual=to_hex(history.opened.base_hash))
        )
        return verdict(), None
    loaded_here = False  # whether base_params is this function's own (then the aggregation may free it early)
    base_params: Mapping[str, Tensor]
    if (
        base is not None
        and base.cid == history.opened.base_cid
        and base.digest == expected_base
        and spec in (None, base.spec)
    ):
        spec, base_params = base.spec, base.params
    else:
        loaded_here = True
        try:
            spec, base_params = load_model(
                store,
                history.opened.base_cid,
                expected_base,
                spec=spec,
                max_blob_size=max_blob_size,
                round_id=r,
                what="base model",
            )
        except VerificationError as err:
            failures.append(err)
            return verdict(), None

    if agg is None:
        screened_valid, screened_out = screen_updates(
            history,
            store,
            spec=spec,
            base_hash=expected_base,
            max_blob_size=max_blob_size,
            max_update_norm=max_update_norm,
        )
        for ex in screened_out:
            logger.info("round %d: excluded %s: %s: %s", r, ex.participant, ex.reason, ex.detail)
        return verdict(tuple(u.participant for u in screened_valid), tuple(screened_out)), None

    # One pass over the updates: each blob is fetched, hashed and checked once, and the ones
    # the coordinator included are fed to the aggregation as they come (in participant order,
    # one decoded update alive at a time). If the screening then disagrees with the recorded
    # inclusion list, that is the failure and the aggregate computed on the way is discarded.
    recorded = set(agg.included)
    total = sum(u.num_samples for u in history.updates if u.participant in recorded)
    valid_records: list[UpdateRecord] = []
    exclusions: list[Exclusion] = []
    screened: list[bool] = []
    checks = _check_updates(
        history, store, spec=spec, base_hash=expected_base, max_blob_size=max_blob_size, max_update_norm=max_update_norm
    )

    aggregate_error: FedchainError | None = None
    params: Mapping[str, Tensor] | None = None
    updates = _screened_stream(checks, valid_records, exclusions, include=recorded, done=screened)
    try:
        params = strategy.aggregate(base_params, updates, total_samples=total, release_base=loaded_here)
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
            failures.append(
                VerificationError(
                    r,
                    "inclusion (valid update omitted)",
                    participant=u.participant,
                    expected="included",
                    actual="omitted",
                )
            )
    for p in agg.included:
        if p not in included:
            why = next((f"{e.reason}: {e.detail}" for e in excluded if e.participant == p), "no recorded update")
            failures.append(
                VerificationError(
                    r,
                    "inclusion (invalid update included)",
                    participant=p,
                    expected="excluded",
                    actual=f"included ({why})",
                )
            )
    if failures:
        return verdict(included, excluded), None
    if params is not None:
        # The stored aggregate, read only if it hashes to the recorded digest, equal byte for
        # byte to the encoding of the recomputed aggregate: then that encoding hashes to the
        # recorded digest (same bytes), and the stored blob is it. Nothing is encoded.
        try:
            stored = store.get_verified(agg.cid, agg.aggregate_hash, max_size=max_blob_size)
            same = aggregate_matches(
                stored,
                params,
                spec=spec,
                strategy=strategy,
                round_id=r,
                base_hash=expected_base,
                sender=coordinator,
                num_samples=total,
            )
            del stored
        except (StorageError, CodecError):
            same = False  # whatever it is, the steps below find it and name it as they always did
        if same:
            return verdict(included, excluded), VerifiedModel(agg.cid, agg.aggregate_hash, spec, params)
    # Something differs: re-encode, hash and compare as the checks are specified, to report it.
    blob: bytes | None = None
    if params is not None:
        try:
            blob = aggregate_blob(
                params,
                spec=spec,
                strategy=strategy,
                round_id=r,
                base_hash=expected_base,
                sender=coordinator,
                num_samples=total,
            )
        except FedchainError as err:
            aggregate_error = err
    del params
    if aggregate_error is not None or blob is None:
        failures.append(
            VerificationError(r, "aggregate", expected="recomputable aggregate", actual=str(aggregate_error))
        )
        return verdict(included, excluded), None
    recomputed = sha256(blob)
    if recomputed != agg.aggregate_hash:
        failures.append(
            VerificationError(
                r, "aggregate (recomputed)", expected=to_hex(agg.aggregate_hash), actual=to_hex(recomputed)
            )
        )
        return verdict(included, excluded), None
    try:
        stored_blob = store.get(agg.cid, max_size=max_blob_size)
    except StorageError as err:
        failures.append(
            VerificationError(
                r, "aggregate blob", expected=f"{to_hex(agg.aggregate_hash)} at {agg.cid}", actual=str(err)
            )
        )
        return verdict(included, excluded), None
    # the recomputed blob hashes to the recorded digest, so equal bytes prove the stored one does too
    if stored_blob != blob:
        failures.append(
            VerificationError(
                r, "aggregate blob hash", expected=to_hex(agg.aggregate_hash), actual=to_hex(sha256(stored_blob))
            )
        )
        return verdict(included, excluded), None
    # Reached only if the stored blob changed between the two reads: it verified the second time.
    return verdict(included, excluded), None


__all__ = [
    "Exclusion",
    "RoundVerdict",
    "VerifiedModel",
    "iter_valid_updates",
    "load_model",
    "screen_and_aggregate",
    "screen_updates",
    "verify_round",
    "verify_round_chained",
]
