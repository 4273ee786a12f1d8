"""The audit: replay a ledger's whole history and verify every round.

Needs only the chain, the store and the ledger's address: no keys, no private data, no trust in
the coordinator, and no torch. In order:

1. the code at the address must be a shipped fedchain ledger (:class:`fedchain.chain.Ledger`
   refuses anything else before a single event is read: "unknown contract code");
2. the manifest is fetched by the CID of ``LedgerCreated`` and checked against the digest the
   contract holds; every rule is read from it (:func:`fedchain.protocol.load_rules`);
3. the genesis model is fetched and checked;
4. every round is verified as in :mod:`fedchain.protocol.verify`, in order, each verified
   aggregate serving as the next round's base, while blobs are read ahead in worker threads
   (:mod:`fedchain.audit._readahead`).

What the report says is what was checked: the head it verified up to, how many rounds ended,
which round is open (an open round is never "ok", only "open"), recorded and valid counts from
the chain, store damage as store damage, and ``--expect-rounds`` turns a history shorter than
expected into a failure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedchain.audit._privacy import dp_accounting
from fedchain.audit._readahead import DEPTH, ReadAhead
from fedchain.chain import Ledger
from fedchain.errors import FedchainError, VerificationError
from fedchain.hashing import to_hex
from fedchain.protocol import (
    Manifest,
    RoundVerdict,
    Rules,
    UpdateStatus,
    VerifiedModel,
    load_model,
    load_rules,
    verify_round,
)
from fedchain.protocol.masked import MASKED_RULE, verify_masked_round
from fedchain.records import LedgerInfo, RoundHistory, RoundStatus, UpdateRecord
from fedchain.storage import BlobStore
from fedchain.types import Address

logger = logging.getLogger(__name__)

#: Coordinates per update in the sketch the cosine similarities are computed on (all of them for smaller models).
SKETCH_SIZE = 16384


@dataclass
class RoundDetails:
    """What the audit observed of a round beyond the verdict (for the report)."""

    history: RoundHistory
    sketches: dict[Address, np.ndarray] = field(default_factory=dict)
    gas: int | None = None
    opened_time: int | None = None
    end_time: int | None = None
    settled: bool = False
    """Whether :meth:`settle` replaced the sketches with their cosine matrix."""
    similarity: tuple[list[Address], list[list[float]]] | None = None

    def settle(self) -> None:
        """Keep the cosine matrix and let the sketches go: a long history's audit holds K x K floats a round,
        not K sketches of :data:`SKETCH_SIZE` values (at 200 rounds of 3 updates: 77 MB)."""
        if not self.settled:
            self.similarity = self.cosine()
            self.sketches.clear()
            self.settled = True

    def cosine(self) -> tuple[list[Address], list[list[float]]] | None:
        """Pairwise cosine similarity of the valid updates (on the sketch), in participant order."""
        if self.settled:
            return self.similarity
        names = sorted(self.sketches, key=lambda a: int(a, 16))
        if len(names) < 2:
            return None
        vectors = [self.sketches[a] for a in names]
        norms = [math.sqrt(_inner(v, v)) for v in vectors]
        matrix = [
            [_inner(a, b) / (na * nb) if na > 0 and nb > 0 else 0.0 for b, nb in zip(vectors, norms, strict=True)]
            for a, na in zip(vectors, norms, strict=True)
        ]
        return names, matrix


def _inner(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` with numpy's own pairwise sum, on the calling thread.

    Not ``np.dot``: BLAS splits a dot of more than about 10,000 values among its threads, which
    then spin waiting for more work; computed for every round while the audit's readers hash, they
    took a third of the machine (an audit's CPU per round 25 -> 47 ms).
    """
    return float(np.add.reduce(np.multiply(a, b)))


@dataclass(frozen=True)
class AuditReport:
    """The outcome of auditing one ledger."""

    ledger: LedgerInfo
    chain_id: int
    head_block: int
    head_hash: bytes
    manifest: Manifest | None
    manifest_cid: str | None
    genesis_cid: str | None
    rounds: tuple[RoundVerdict, ...]
    failures: tuple[VerificationError, ...]
    """Failures of the ledger as a whole (manifest, genesis, history shorter than expected)."""
    details: Mapping[int, RoundDetails] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)
    registered: tuple[Address, ...] = ()
    expected_rounds: int | None = None
    privacy: Mapping[str, Any] | None = None
    """The DP accounting (:func:`fedchain.audit._privacy.dp_accounting`), if any update recorded DP-SGD."""

    @property
    def all_failures(self) -> tuple[VerificationError, ...]:
        """Every failure: the ledger's and every round's."""
        return self.failures + tuple(f for v in self.rounds for f in v.failures)

    @property
    def ok(self) -> bool:
        """Whether everything verified."""
        return not self.all_failures

    @property
    def rounds_ended(self) -> int:
        """Rounds finalized or abandoned."""
        return sum(1 for v in self.rounds if v.status in (RoundStatus.FINALIZED, RoundStatus.ABANDONED))

    @property
    def rounds_finalized(self) -> int:
        return sum(1 for v in self.rounds if v.status is RoundStatus.FINALIZED)

    @property
    def open_round(self) -> int | None:
        """The round still open or closed (not ended), if any."""
        return next((v.round_id for v in self.rounds if v.status in (RoundStatus.OPEN, RoundStatus.CLOSED)), None)

    def name(self, address: str) -> str | None:
        return self.names.get(address) or self.names.get(address.lower())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``--json`` output; the HTML report renders it)."""

        def err(e: VerificationError) -> dict[str, Any]:
            return {
                "round": e.round_id,
                "check": e.what,
                "participant": e.participant,
                "expected": e.expected,
                "actual": e.actual,
                "message": str(e),
            }

        m = self.manifest
        manifest = None
        if m is not None:
            manifest = {
                "hash": to_hex(m.digest),
                "cid": self.manifest_cid,
                "task": {"name": m.task_name, "version": m.task_version},
                "aggregation": dict(m.aggregation),
                "max_update_norm": m.max_update_norm,
                "max_blob_size": m.max_blob_size,
                "min_updates": m.min_updates,
                "round_seconds": m.round_seconds,
                "privacy": dict(m.privacy),
                "schema": m.schema.to_json(),
                "model": m.model,
                "frozen": dict(m.frozen),
                "train": dict(m.train),
            }
        addresses = list(self.registered) + [
            a for a in self.names if a not in self.registered and a != self.ledger.coordinator
        ]
        return {
            "ok": self.ok,
            "ledger": self.ledger.address,
            "chain_id": self.chain_id,
            "coordinator": self.ledger.coordinator,
            "head": {"block": self.head_block, "hash": "0x" + bytes(self.head_hash).hex()},
            "manifest": manifest,
            "genesis": {"hash": to_hex(self.ledger.genesis_hash), "cid": self.genesis_cid},
            "rounds_verified": len(self.rounds),
            "rounds_ended": self.rounds_ended,
            "rounds_finalized": self.rounds_finalized,
            "open_round": self.open_round,
            "expected_rounds": self.expected_rounds,
            "participants": [{"address": a, "name": self.name(a)} for a in addresses],
            "failures": [err(e) for e in self.all_failures],
            "rounds": [self._round_json(v, err) for v in self.rounds],
            "privacy": None if self.privacy is None else dict(self.privacy),
        }

    def _round_json(self, v: RoundVerdict, err: Callable[[VerificationError], dict[str, Any]]) -> dict[str, Any]:
        d = self.details.get(v.round_id)
        h = d.history if d is not None else None
        cosine = d.cosine() if d is not None else None
        return {
            "round": v.round_id,
            "status": v.status.name.lower(),
            "ok": v.ok,
            "opened_block": h.state.opened_block if h else None,
            "closed_block": (h.state.closed_block or None) if h else None,
            "end_block": (h.state.end_block or None) if h else None,
            "deadline": h.state.deadline if h else None,
            "opened_time": d.opened_time if d else None,
            "end_time": d.end_time if d else None,
            "base": {"hash": to_hex(h.opened.base_hash), "cid": h.opened.base_cid} if h else None,
            "aggregate": {"hash": to_hex(h.aggregate.aggregate_hash), "cid": h.aggregate.cid}
            if h and h.aggregate
            else None,
            "rule": v.rule,
            "private": v.rule == MASKED_RULE,
            "recorded": len(v.outcomes),
            "valid": sum(1 for o in v.outcomes if o.status is not UpdateStatus.EXCLUDED),
            "included": len(v.included),
            "discarded": sum(1 for o in v.outcomes if o.status is UpdateStatus.DISCARDED),
            "updates": [
                {
                    "participant": o.record.participant,
                    "name": self.name(o.record.participant),
                    "hash": to_hex(o.record.update_hash),
                    "cid": o.record.cid,
                    "samples": o.record.num_samples,
                    "block": o.record.block_number,
                    "status": o.status.value,
                    "reason": o.reason,
                    "detail": o.detail,
                    "norm": o.norm,
                    "clipped": o.clipped,
                    "metrics": dict(o.metrics),
                }
                for o in v.outcomes
            ],
            "missing": list(v.missing),
            "cosine": {"participants": cosine[0], "matrix": cosine[1]} if cosine else None,
            "gas": d.gas if d else None,
            "failures": [err(e) for e in v.failures],
        }


#: Consecutive coordinates per run of a sketch: one 64-byte cache line of float32 values.
SKETCH_RUN = 16


def _sketch(delta: Mapping[str, np.ndarray], size: int) -> np.ndarray:
    """A fixed sample of ``size`` of the update's coordinates (in schema order, all of them if fewer), as float64.

    Runs of :data:`SKETCH_RUN` consecutive coordinates (``size`` of them if ``size`` is smaller),
    evenly spaced over the tensors laid end to end: run ``r`` starts at ``r * (total // runs)``.
    A run is one cache line, so the sample touches ``size / 16`` lines of the update instead of
    the ``size`` a strided sample touches (at 1M parameters: 64 KiB of a blob no longer in the
    cache instead of 1 MiB). The runs within a tensor are copied as one strided view (no index
    arrays: about a tenth of the time of gathering by positions); a run across two tensors
    element by element.
    """
    flats = [np.asarray(delta[k], dtype=np.float32).reshape(-1) for k in sorted(delta)]
    total = sum(f.size for f in flats)
    if total <= size:
        return np.concatenate([f.astype(np.float64) for f in flats]) if flats else np.empty(0, dtype=np.float64)
    run = min(SKETCH_RUN, size)
    runs = size // run
    step = total // runs  # >= run, since total > size >= runs * run
    out = np.empty((runs, run), dtype=np.float64)
    offset = 0
    for flat in flats:
        end = offset + flat.size
        # the runs that start in [offset, end - run] lie wholly in this tensor
        first, last = -(-offset // step), min(runs, (end - run) // step + 1) if end >= run else 0
        if last > first:
            (stride,) = flat.strides
            rows = np.lib.stride_tricks.as_strided(
                flat[first * step - offset :], shape=(last - first, run), strides=(step * stride, stride)
            )
            out[first:last] = rows
        # a run that starts in the run before this tensor's first element, or starts in it and ends past it
        for r in {max(0, first - 1), max(first, last)} - set(range(first, last)):
            if r >= runs:
                continue
            for j in range(run):
                at = r * step + j
                if offset <= at < end:
                    out[r, j] = flat[at - offset]
        offset = end
    return out.reshape(-1)


def audit_ledger(
    ledger: Ledger,
    store: BlobStore,
    *,
    names: Mapping[str, str] | None = None,
    on_round: Callable[[RoundVerdict], None] | None = None,
    check_cids: bool = False,
    expect_rounds: int | None = None,
    details: bool = False,
) -> AuditReport:
    """Replay ``ledger``'s history from the chain and verify every round.

    Parameters
    ----------
    names:
        Participant names by address, for the report (informational).
    on_round:
        Called with each round's verdict as soon as it is known (progress output).
    check_cids:
        Also check every block of every blob against the CID that names it (a second hash of every byte).
    expect_rounds:
        The history must hold at least this many ended rounds; fewer is a failure.
    details:
        Also read each round's gas and block times (a few more chain reads per round), for the HTML report.
    """
    info = ledger.info()
    head_block, head_hash = ledger.head()
    chain_id = ledger.chain.chain_id
    failures: list[VerificationError] = []
    verdicts: list[RoundVerdict] = []
    round_details: dict[int, RoundDetails] = {}
    registered = ledger.participant_addresses()

    def report(
        manifest: Manifest | None = None, manifest_cid: str | None = None, genesis_cid: str | None = None
    ) -> AuditReport:
        if expect_rounds is not None:
            ended = sum(1 for v in verdicts if v.status in (RoundStatus.FINALIZED, RoundStatus.ABANDONED))
            if ended < expect_rounds:
                failures.append(
                    VerificationError(
                        ended,
                        "history length",
                        expected=f"at least {expect_rounds} ended rounds",
                        actual=f"{ended} ended rounds",
                    )
                )
        privacy, dp_failures = dp_accounting(verdicts, manifest)
        return AuditReport(
            info,
            chain_id,
            head_block,
            head_hash,
            manifest,
            manifest_cid,
            genesis_cid,
            tuple(verdicts),
            tuple(failures + dp_failures),
            round_details,
            dict(names or {}),
            registered,
            expect_rounds,
            privacy,
        )

    try:
        rules: Rules = load_rules(ledger, store)
    except VerificationError as e:
        failures.append(e)
        return report()
    genesis_cid = ledger.genesis_cid()
    with ReadAhead(
        ledger, store, max_blob_size=rules.max_blob_size, check_cids=check_cids, squares=not rules.manifest.private
    ) as reader:
        try:
            params = load_model(reader.store, rules, genesis_cid, info.genesis_hash, round_id=0, what="genesis model")
        except VerificationError as e:
            failures.append(e)
            return report(rules.manifest, rules.manifest_cid, genesis_cid)
        expected = info.genesis_hash
        model: VerifiedModel | None = VerifiedModel(genesis_cid, info.genesis_hash, params)
        del params
        for history in reader.rounds():
            round_id = int(history.state.round_id)
            d = RoundDetails(history)
            round_details[round_id] = d

            def observe(record: UpdateRecord, delta: Mapping[str, np.ndarray], d: RoundDetails = d) -> None:
                d.sketches[record.participant] = _sketch(delta, SKETCH_SIZE)

            try:
                if rules.manifest.private:
                    verdict, verified = verify_masked_round(
                        ledger, history, reader.store, rules, expected_base=expected, base=model
                    )
                else:
                    verdict, verified = verify_round(
                        history,
                        reader.store,
                        rules,
                        expected_base=expected,
                        base=model,
                        registered=registered,
                        observer=observe,
                        hold=DEPTH,  # a round's updates no more than are read ahead: held anyway
                    )
            except FedchainError as e:  # an unexpected failure still names the round
                verified = None
                verdict = RoundVerdict(
                    round_id,
                    history.state.status,
                    (),
                    (),
                    (),
                    None,
                    (VerificationError(round_id, "round", expected="verifiable", actual=str(e)),),
                )
            d.settle()
            if details:
                _read_details(ledger, d)
            verdicts.append(verdict)
            if on_round is not None:
                on_round(verdict)
            status = history.state.status
            if status is RoundStatus.ABANDONED:
                continue  # the next round builds on the same base
            if status is not RoundStatus.FINALIZED or history.aggregate is None:
                break  # the open (or closed) round: nothing after it
            expected = history.aggregate.aggregate_hash
            model = verified
    return report(rules.manifest, rules.manifest_cid, genesis_cid)


def _read_details(ledger: Ledger, d: RoundDetails) -> None:
    """Gas of every transaction of the round, and its first and last block times.

    A transaction alone in its block (every one on an automining development chain) used the
    block's gas: the block (one cheap call, by number) gives it, and gives the times too. A
    receipt is read only for a transaction that shares its block: looking a receipt up by hash
    costs eth-tester a scan of the chain (40 ms at a few hundred blocks, growing with the chain),
    which made ``details=`` most of an audit's time and its time per round grow with the history.
    """
    h = d.history
    w3 = ledger.chain.w3
    txs = [(h.opened.tx_hash, h.opened.block_number), *((u.tx_hash, u.block_number) for u in h.updates)]
    for extra in (h.closed, h.aggregate, h.abandoned):
        if extra is not None:
            txs.append((extra.tx_hash, extra.block_number))
    blocks: dict[int, Any] = {}

    def block(number: int) -> Any:
        if number not in blocks:
            blocks[number] = w3.eth.get_block(number)
        return blocks[number]

    def gas(tx_hash: str, number: int) -> int:
        b = block(number)
        hashes = [bytes(t) for t in b["transactions"]]
        if hashes == [bytes.fromhex(tx_hash.removeprefix("0x"))]:
            return int(b["gasUsed"])
        return int(w3.eth.get_transaction_receipt(tx_hash)["gasUsed"])  # type: ignore[arg-type]

    try:
        d.gas = sum(gas(t, n) for t, n in txs)
        d.opened_time = int(block(h.state.opened_block)["timestamp"])
        if h.state.end_block:
            d.end_time = int(block(h.state.end_block)["timestamp"])
    except Exception as err:  # noqa: BLE001 - details are informational; the verdict does not depend on them
        logger.debug("round %d: details not read: %s", h.state.round_id, err)


def audit_address(
    chain: Any,
    address: str,
    store: BlobStore,
    **kwargs: Any,
) -> AuditReport | VerificationError:
    """:func:`audit_ledger` of the ledger at ``address``, or the failure if the code there is not a fedchain ledger."""
    from fedchain.errors import UnknownContractError

    try:
        ledger = Ledger(chain, address)
    except UnknownContractError as err:
        return VerificationError(
            0, "unknown contract code", participant=None, expected="a fedchain ledger", actual=str(err)
        )
    return audit_ledger(ledger, store, **kwargs)


__all__ = ["SKETCH_RUN", "SKETCH_SIZE", "AuditReport", "RoundDetails", "audit_address", "audit_ledger"]
