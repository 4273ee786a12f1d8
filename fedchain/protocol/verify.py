"""Screening and verification of a round: one implementation for the coordinator, participants and the audit.

For round ``r`` with recorded history ``H`` (:meth:`Ledger.round_history`) and the federation's
:class:`~fedchain.protocol.rules.Rules`:

1. **lineage**: the round's base is the genesis model or the last *finalized* aggregate before
   it (an abandoned round changes nothing), and the base blob fetched by its CID hashes to the
   recorded digest; the round's quorum is the manifest's;
2. **screening**: every recorded update is fetched by CID, hashed against its recorded digest
   as it is read, and decoded with every check of :func:`fedchain.fl.codec.decode_update`
   against the manifest (schema: names, shapes, dtypes; finite values; the norm bound; header
   bound to this round, base, sender and declared sample count). An update failing any check is
   *excluded*, with its reason. Identical digests from two senders: the copy (whose header names
   someone else) is excluded as ``copied``;
3. **inclusion**: a finalized round's included list must be exactly the valid updates. The close
   fixes the recorded set before anybody aggregates (``docs/PROTOCOL.md``), so "the valid
   updates" are the valid ones among *all* the round's recorded submissions;
4. **aggregate**: recomputed from the base and the valid updates with the manifest's strategy,
   it must equal, byte for byte, the stored aggregate blob, which must hash to the recorded digest;
5. an **abandoned** round must have no aggregate.

Exclusions are normal (they protect the federation); a mismatch in steps 1, 3, 4 or 5 is a
failure. A blob the coordinator included that the store can no longer serve correctly (a block
that does not match its CID, or a blob gone) is reported as **store damage**, naming the CID and
the block: it says the store changed since the round, not that the coordinator cheated.

Every blob is read with :meth:`BlobStore.get_verified` against the digest the ledger records,
hashed once as it is read (a store that computed an update's sum of squares on the thread that read
it, as the audit's read-ahead does, hands it over through ``squares_of(blob)`` and the norm is not
computed again); the stored aggregate is compared with the recomputed tensors without
encoding them (:func:`fedchain.fl.codec.model_blob_matches`); a round's verified aggregate is
handed on as the next round's base (:class:`VerifiedModel`), so it is not fetched twice.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from fedchain.errors import (
    AggregationError,
    BlobNotFoundError,
    CodecError,
    DigestMismatchError,
    FedchainError,
    IntegrityError,
    StorageError,
    VerificationError,
)
from fedchain.fl.codec import DecodedUpdate, l2_norm
from fedchain.fl.robust import RobustResult
from fedchain.hashing import sha256, short, to_hex
from fedchain.protocol.blobs import aggregate_blob, aggregate_matches, read_model, read_update, stored_aggregate_arrays
from fedchain.protocol.rules import Rules
from fedchain.records import RoundHistory, RoundStatus, UpdateRecord
from fedchain.storage import BlobStore
from fedchain.types import Address, Cid, Digest

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
#: Called with each valid update's record and delta as it is screened (the audit's statistics).
Observer = Callable[[UpdateRecord, Mapping[str, np.ndarray]], None]


class UpdateStatus(enum.Enum):
    """What became of one recorded update."""

    INCLUDED = "included"
    """Valid, and in the aggregate."""
    EXCLUDED = "excluded"
    """Invalid (a protocol exclusion, with a reason)."""
    VALID = "valid"
    """Valid, in a round not finalized yet."""
    DISCARDED = "discarded"
    """Valid and included, but left out by the robust rule (e.g. not selected by Krum): not an exclusion."""


@dataclass(frozen=True)
class Exclusion:
    """An update recorded on the ledger but left out of the aggregate, and why."""

    participant: Address
    reason: str
    detail: str


@dataclass(frozen=True)
class UpdateOutcome:
    """One recorded update and what verification made of it."""

    record: UpdateRecord
    status: UpdateStatus
    reason: str | None = None
    detail: str | None = None
    norm: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    clipped: bool = False
    """Scaled down by the rule's server-side clipping before it was aggregated."""


def mark_selection(outcomes: list[UpdateOutcome], strategy: object) -> None:
    """Mark what a robust rule discarded and clipped (nothing for FedAvg).

    ``strategy`` is the strategy whose last aggregation it was, or that aggregation's
    :class:`~fedchain.fl.robust.RobustResult` itself (:attr:`Prepared.selection`).
    """
    last = strategy if isinstance(strategy, RobustResult) else getattr(strategy, "last", None)
    if last is None:
        return
    discarded, clipped = set(last.discarded), set(last.clipped)
    outcomes[:] = [
        UpdateOutcome(
            o.record,
            UpdateStatus.DISCARDED
            if o.status is UpdateStatus.INCLUDED and o.record.participant in discarded
            else o.status,
            o.reason,
            o.detail,
            o.norm,
            o.metrics,
            o.record.participant in clipped,
        )
        for o in outcomes
    ]


@dataclass(frozen=True)
class RoundVerdict:
    """The outcome of verifying one round."""

    round_id: int
    status: RoundStatus
    included: tuple[Address, ...]
    excluded: tuple[Exclusion, ...]
    missing: tuple[Address, ...]
    aggregate_hash: Digest | None
    failures: tuple[VerificationError, ...] = ()
    outcomes: tuple[UpdateOutcome, ...] = ()
    rule: str | None = None

    @property
    def ok(self) -> bool:
        """Whether nothing failed (exclusions are fine; an open round is not a failure)."""
        return not self.failures

    @property
    def finalized(self) -> bool:
        return self.status is RoundStatus.FINALIZED

    def raise_for_failure(self) -> None:
        """Raise the first failure, if any."""
        if self.failures:
            raise self.failures[0]


@dataclass(frozen=True)
class VerifiedModel:
    """A model blob verified against the ledger in this process, and its parameters (read, not changed)."""

    cid: Cid
    digest: Digest
    params: Mapping[str, np.ndarray]


# --------------------------------------------------------------------------- screening


@dataclass
class _Screened:
    """Screening results filled in as the stream is consumed."""

    valid: list[UpdateRecord] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)
    outcomes: list[UpdateOutcome] = field(default_factory=list)
    damage: dict[Address, str] = field(default_factory=dict)  # store damage, by participant
    done: bool = False


def _fetch_update(record: UpdateRecord, store: BlobStore, rules: Rules, base_hash: Digest) -> DecodedUpdate:
    try:
        blob = store.get_verified(record.cid, record.update_hash, max_size=rules.max_blob_size)
    except DigestMismatchError as err:
        raise CodecError(
            "hash",
            f"blob at {record.cid} hashes to {to_hex(err.actual)}, the ledger records {to_hex(record.update_hash)}",
        ) from None
    squares_of = getattr(store, "squares_of", None)
    squares = squares_of(blob) if callable(squares_of) else None
    return read_update(blob, rules, record, base_hash=base_hash, copy=False, squares=squares)


def _stream(
    history: RoundHistory,
    store: BlobStore,
    rules: Rules,
    screened: _Screened,
    *,
    base_hash: Digest,
    include: set[Address] | None = None,
    observer: Observer | None = None,
) -> Iterator[tuple[Address, int, Mapping[str, np.ndarray]]]:
    """Screen every recorded update as it is asked for, yielding the valid ones to aggregate.

    Only participants in ``include`` are yielded (default: every valid one). One decoded update
    is alive at a time; the results land in ``screened``.
    """
    by_digest: dict[bytes, list[Address]] = {}
    for record in history.updates:
        by_digest.setdefault(bytes(record.update_hash), []).append(record.participant)
    for record in history.updates:
        others = [p for p in by_digest[bytes(record.update_hash)] if p != record.participant]
        try:
            decoded = _fetch_update(record, store, rules, base_hash)
        except CodecError as err:
            if others and err.reason == "sender":
                # The blob binds its sender: this account submitted someone else's update.
                reason, detail = (
                    "copied",
                    f"same update digest {short(record.update_hash)} as {', '.join(others)}; {err.detail}",
                )
            else:
                reason, detail = err.reason, err.detail
            _exclude(screened, record, reason, detail)
            continue
        except IntegrityError as err:  # a block that does not match its CID: the store is damaged
            screened.damage[record.participant] = f"store damage: {err}"
            _exclude(screened, record, "unavailable", f"store damage at {err.cid}, block {err.block}: {err.problem}")
            continue
        except StorageError as err:
            screened.damage[record.participant] = f"store: {err}"
            _exclude(screened, record, "unavailable", str(err))
            continue
        delta = decoded.delta
        norm = decoded.norm if getattr(decoded, "norm", None) is not None else l2_norm(delta)
        metrics = dict(getattr(decoded.meta, "metrics", {}) or {})
        del decoded
        screened.valid.append(record)
        screened.outcomes.append(UpdateOutcome(record, UpdateStatus.VALID, norm=norm, metrics=metrics))
        if observer is not None:
            observer(record, delta)
        if include is None or record.participant in include:
            yield record.participant, record.num_samples, delta
        del delta  # not alive while the next blob is read
    screened.done = True


def _exclude(screened: _Screened, record: UpdateRecord, reason: str, detail: str) -> None:
    screened.excluded.append(Exclusion(record.participant, reason, detail))
    screened.outcomes.append(UpdateOutcome(record, UpdateStatus.EXCLUDED, reason, detail))


def _finite(params: Mapping[str, np.ndarray]) -> bool:
    return all(bool(np.isfinite(a).all()) for a in params.values())


@dataclass(frozen=True)
class Prepared:
    """A closed round's screening and the aggregate of its valid updates (what the coordinator finalizes).

    ``params`` is ``None`` when the valid updates cannot be aggregated into a finite model
    (``error`` says why): the round cannot be finalized and is abandoned. ``selection`` is what a
    robust rule selected, discarded and clipped in computing ``params`` (``None`` for FedAvg),
    taken when it was computed: the strategy's ``last`` changes with its next aggregation.
    """

    valid: tuple[UpdateRecord, ...]
    excluded: tuple[Exclusion, ...]
    params: Arrays | None
    error: AggregationError | None = None
    selection: RobustResult | None = None


def prepare_aggregate(
    history: RoundHistory,
    store: BlobStore,
    rules: Rules,
    load_base: Callable[[], Arrays],
    *,
    observer: Observer | None = None,
) -> Prepared:
    """Screen a round's recorded updates and aggregate the valid ones: what the coordinator runs.

    One pass over the blobs in the usual case: the aggregation weighs each update by ``n_k / n``
    with ``n`` the valid updates' total, known only once all are screened, so the pass assumes
    every recorded update is valid and aggregates as it screens; if any is excluded, a second
    pass aggregates the valid ones with the right ``n``. ``load_base()`` gives the base, once per
    pass; the aggregation may free it as soon as its accumulator holds it.
    """
    base_hash = history.opened.base_hash
    screened = _Screened()
    updates = _stream(history, store, rules, screened, base_hash=base_hash, observer=observer)
    params: Arrays | None = None
    error: AggregationError | None = None
    try:
        params = rules.strategy.aggregate(
            load_base(), updates, total_samples=sum(u.num_samples for u in history.updates), release_base=True
        )
    except AggregationError as err:
        error = err
    for _ in updates:  # finish screening if the aggregation stopped early
        pass
    if screened.excluded:  # the optimistic total was wrong: again, with the valid ones only
        params, error = None, None
        valid = {r.participant for r in screened.valid}
        again = _stream(history, store, rules, _Screened(), base_hash=base_hash, include=valid)
        try:
            params = rules.strategy.aggregate(
                load_base(), again, total_samples=sum(u.num_samples for u in screened.valid), release_base=True
            )
        except AggregationError as err:
            error = err
    if params is not None and not _finite(params):
        params = None
        error = AggregationError(f"round {history.state.round_id}: the aggregate of the valid updates is not finite")
    selection = getattr(rules.strategy, "last", None) if params is not None else None
    return Prepared(tuple(screened.valid), tuple(screened.excluded), params, error, selection)


# --------------------------------------------------------------------------- verification


def load_model(store: BlobStore, rules: Rules, cid: str, digest: Digest, *, round_id: int, what: str) -> Arrays:
    """Fetch a model blob, check it against its recorded digest and decode it against the manifest.

    Raises
    ------
    VerificationError
        If the blob cannot be fetched, does not hash to ``digest``, or is not a valid model.
    """
    try:
        blob = store.get_verified(cid, digest, max_size=rules.max_blob_size)
    except DigestMismatchError as err:
        raise VerificationError(round_id, f"{what} hash", expected=to_hex(digest), actual=to_hex(err.actual)) from None
    except IntegrityError as err:
        raise VerificationError(
            round_id, f"store damage ({what})", expected=f"{to_hex(digest)} at {cid}", actual=str(err)
        ) from err
    except StorageError as err:
        raise VerificationError(round_id, what, expected=f"{to_hex(digest)} at {cid}", actual=str(err)) from err
    try:
        model = read_model(blob, rules, copy=False)
    except CodecError as err:
        raise VerificationError(round_id, what, expected="a valid model blob", actual=str(err)) from err
    return dict(model.params)


def verify_round(
    history: RoundHistory,
    store: BlobStore,
    rules: Rules,
    *,
    expected_base: Digest,
    base: VerifiedModel | None = None,
    registered: tuple[Address, ...] = (),
    observer: Observer | None = None,
    hold: int = 0,
) -> tuple[RoundVerdict, VerifiedModel | None]:
    """Verify one round as described in the module docstring.

    Parameters
    ----------
    history:
        What the ledger recorded about the round.
    store:
        Where its blobs are.
    rules:
        The federation's rules (from its manifest).
    expected_base:
        The genesis digest, or the last finalized aggregate before this round.
    base:
        A model the caller verified before (normally the previous finalized aggregate), used as
        this round's base instead of fetching it again only if it is the very blob the round
        records (same CID and digest).
    registered:
        Participants registered at the time (to report who sent nothing).
    observer:
        Called with each valid update as it is screened.
    hold:
        When the round recorded at most this many updates, screen them all first and aggregate
        them held in memory together (one pass over the model, not one per update: faster, and
        the same bits; it holds every update at once). By default each update is aggregated as
        it is screened, one alive at a time.

    Returns
    -------
    tuple
        The verdict, and the round's aggregate as a :class:`VerifiedModel` if the round is
        finalized and verified (else ``None``).
    """
    r = int(history.state.round_id)
    failures: list[VerificationError] = []
    submitted = {u.participant for u in history.updates}
    missing = tuple(a for a in registered if a not in submitted)
    agg = history.aggregate
    status = history.state.status
    screened = _Screened()

    def verdict() -> RoundVerdict:
        return RoundVerdict(
            r,
            status,
            # what the chain recorded as included (equal to the valid updates when the round verifies)
            tuple(agg.included) if status is RoundStatus.FINALIZED and agg is not None else (),
            tuple(screened.excluded),
            missing,
            agg.aggregate_hash if agg else None,
            tuple(failures),
            tuple(sorted(screened.outcomes, key=lambda o: int(o.record.participant, 16))),
            rules.strategy.name,
        )

    if history.opened.base_hash != expected_base:
        failures.append(
            VerificationError(r, "lineage", expected=to_hex(expected_base), actual=to_hex(history.opened.base_hash))
        )
        return verdict(), None
    if history.opened.min_updates != rules.min_updates:
        failures.append(
            VerificationError(
                r, "round rules (min_updates)", expected=str(rules.min_updates), actual=str(history.opened.min_updates)
            )
        )
    if status is RoundStatus.ABANDONED:
        if agg is not None:
            failures.append(
                VerificationError(r, "abandoned round", expected="no aggregate", actual=to_hex(agg.aggregate_hash))
            )
        for _ in _stream(history, store, rules, screened, base_hash=expected_base, observer=observer):
            pass
        return verdict(), None
    if status is not RoundStatus.FINALIZED or agg is None:
        # open or closed: nothing to check against yet; screen what is recorded (informational)
        for _ in _stream(history, store, rules, screened, base_hash=expected_base, observer=observer):
            pass
        return verdict(), None

    loaded_here = False
    base_params: Mapping[str, np.ndarray]
    if base is not None and base.cid == history.opened.base_cid and base.digest == expected_base:
        base_params = base.params
    else:
        loaded_here = True
        try:
            base_params = load_model(
                store, rules, history.opened.base_cid, expected_base, round_id=r, what="base model"
            )
        except VerificationError as err:
            failures.append(err)
            return verdict(), None

    # One pass: each blob fetched, hashed and checked once; the ones the coordinator included are
    # fed to the aggregation as they come. If the screening then disagrees with the recorded
    # inclusion list, that is the failure and the aggregate computed on the way is discarded.
    recorded = set(agg.included)
    total = sum(u.num_samples for u in history.updates if u.participant in recorded)
    updates = _stream(history, store, rules, screened, base_hash=expected_base, include=recorded, observer=observer)
    aggregate_error: FedchainError | None = None
    params: Mapping[str, np.ndarray] | None = None
    held: list[tuple[Address, int, Mapping[str, np.ndarray]]] | None = None
    try:
        held = list(updates) if len(history.updates) <= hold else None
        # held, and a strategy that can compare its aggregate with the stored one without writing it:
        # that is done once the screening is checked (below), before anything is aggregated
        if held is None or getattr(rules.strategy, "matches", None) is None:
            params = rules.strategy.aggregate(
                base_params, updates if held is None else held, total_samples=total, release_base=loaded_here
            )
            held = None
    except FedchainError as err:
        aggregate_error = err
        held = None
    for _ in updates:
        pass
    for ex in screened.excluded:
        logger.info("round %d: excluded %s: %s: %s", r, ex.participant, ex.reason, ex.detail)
    valid = {u.participant for u in screened.valid}
    for u in screened.valid:
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
        if p in valid:
            continue
        if p in screened.damage:
            cid = next((u.cid for u in history.updates if u.participant == p), "?")
            failures.append(
                VerificationError(
                    r,
                    "store damage",
                    participant=p,
                    expected=f"the recorded update at {cid}",
                    actual=screened.damage[p],
                )
            )
            continue
        why = next((f"{e.reason}: {e.detail}" for e in screened.excluded if e.participant == p), "no recorded update")
        failures.append(
            VerificationError(
                r, "inclusion (invalid update included)", participant=p, expected="excluded", actual=f"included ({why})"
            )
        )
    # outcomes of included updates
    screened.outcomes[:] = [
        UpdateOutcome(o.record, UpdateStatus.INCLUDED, o.reason, o.detail, o.norm, o.metrics)
        if o.status is UpdateStatus.VALID and o.record.participant in recorded
        else o
        for o in screened.outcomes
    ]
    mark_selection(screened.outcomes, rules.strategy)
    if failures:
        return verdict(), None
    if held is not None:
        verified = _stored_if_recomputed(history, store, rules, base_params, held, total, expected_base)
        if verified is not None:
            return verdict(), verified
        try:  # it differs, or could not be compared: aggregate, and the steps below say what differs
            params = rules.strategy.aggregate(base_params, held, total_samples=total, release_base=loaded_here)
        except FedchainError as err:
            aggregate_error = err
    del held
    if params is not None:
        try:
            stored = store.get_verified(agg.cid, agg.aggregate_hash, max_size=rules.max_blob_size)
            same = aggregate_matches(stored, params, rules, round_id=r, base_hash=expected_base, num_samples=total)
            del stored
        except (StorageError, CodecError):
            same = False  # whatever it is, the steps below find it and name it
        if same:
            return verdict(), VerifiedModel(agg.cid, agg.aggregate_hash, params)
    # Something differs: re-encode, hash and compare as the checks are specified, to report it.
    blob: bytes | None = None
    if params is not None:
        try:
            blob = aggregate_blob(params, rules, round_id=r, base_hash=expected_base, num_samples=total)
        except FedchainError as err:
            aggregate_error = err
    del params
    if aggregate_error is not None or blob is None:
        failures.append(
            VerificationError(r, "aggregate", expected="recomputable aggregate", actual=str(aggregate_error))
        )
        return verdict(), None
    recomputed = sha256(blob)
    if recomputed != agg.aggregate_hash:
        failures.append(
            VerificationError(
                r, "aggregate (recomputed)", expected=to_hex(agg.aggregate_hash), actual=to_hex(recomputed)
            )
        )
        return verdict(), None
    try:
        stored_blob = store.get(agg.cid, max_size=rules.max_blob_size)
    except IntegrityError as err:
        failures.append(
            VerificationError(
                r, "store damage (aggregate)", expected=f"{to_hex(agg.aggregate_hash)} at {agg.cid}", actual=str(err)
            )
        )
        return verdict(), None
    except (BlobNotFoundError, StorageError) as err:
        failures.append(
            VerificationError(
                r, "aggregate blob", expected=f"{to_hex(agg.aggregate_hash)} at {agg.cid}", actual=str(err)
            )
        )
        return verdict(), None
    if stored_blob != blob:
        failures.append(
            VerificationError(
                r, "aggregate blob hash", expected=to_hex(agg.aggregate_hash), actual=to_hex(sha256(stored_blob))
            )
        )
        return verdict(), None
    return verdict(), None  # the stored blob changed between the two reads: it verified the second time


def _stored_if_recomputed(
    history: RoundHistory,
    store: BlobStore,
    rules: Rules,
    base: Mapping[str, np.ndarray],
    held: list[tuple[Address, int, Mapping[str, np.ndarray]]],
    total: int,
    base_hash: Digest,
) -> VerifiedModel | None:
    """The stored aggregate, if it is exactly the blob the strategy's aggregate of ``held`` encodes to; else ``None``.

    Its header must be :func:`aggregate_blob`'s in all but the values (length, metadata, names,
    shapes) and its values the aggregate's bits, all finite (``rules.strategy.matches``): then
    the stored blob is ``aggregate_blob`` of the aggregate, so its tensors are the verified model
    (views of the stored blob, which they keep alive). ``None`` sends the caller to aggregate and
    compare as specified, which names what differs.
    """
    agg = history.aggregate
    assert agg is not None
    matches: Callable[..., bool] = rules.strategy.matches  # type: ignore[attr-defined]  # the caller checked
    try:
        stored = store.get_verified(agg.cid, agg.aggregate_hash, max_size=rules.max_blob_size)
        arrays = stored_aggregate_arrays(
            stored, rules, round_id=int(history.state.round_id), base_hash=base_hash, num_samples=total
        )
        if arrays is None or not matches(base, held, total_samples=total, expected=arrays):
            return None
    except FedchainError:
        return None
    return VerifiedModel(agg.cid, agg.aggregate_hash, arrays)


__all__ = [
    "Exclusion",
    "Observer",
    "Prepared",
    "RoundVerdict",
    "UpdateOutcome",
    "UpdateStatus",
    "VerifiedModel",
    "load_model",
    "mark_selection",
    "prepare_aggregate",
    "verify_round",
]
