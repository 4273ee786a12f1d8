"""Masked rounds on the ledger: one implementation for the coordinator, the participants and the audit.

The pure scheme is :mod:`fedchain.fl.masking` (docs/PRIVATE_ROUNDS.md); this module drives it
from chain state, so everybody derives the same round from the same events:

- **roster**: every registered participant with a masking key when the round opened
  (:meth:`Ledger.roster`);
- **S_0**: the recorded submissions (the close fixes them). Each one's blob is fetched against
  its recorded digest and decoded against the round, base, sender, sample count, the manifest's
  fixed-point parameters and the roster (a pair commitment and a sealed share of its self seed
  for every member); one that fails has a *problem*: none of its reveals can be checked and its
  self seed has no shares, so it is not in S_0 (the others reveal their pair seeds with it);
- **reveals** (:func:`replay_reveals`): phases of ``plan_reveals``, in chain order. A phase
  starts at the close (or where the previous phase ended), and ends when every request of it
  is met or at ``start + phase_seconds`` (block timestamps); a reveal counts only if the current
  plan asks for it, it is mined by the phase's deadline and it matches its header commitment (the
  revealer's own for a pair seed, the owner's for a share; a *wrong reveal* is ignored and named).
  At a pair phase's deadline the laggards leave S; the share phase moves nobody out of S (a
  silent member's self seed is reconstructed from the others' shares), and if its deadline
  passes with a survivor's self seed short of ``share_threshold`` shares the round is abandoned;
- **aggregate** (:func:`unmask_aggregate`): the survivors' words summed, unmasked with the
  counted reveals, decoded with frozen arithmetic (``apply_masked_aggregate``), and screened
  by ``aggregate_norm_bound``.

Every self seed is derived from the participant's masking private key (HKDF, info
``fedchain/self/v1``, salted by chain, ledger and round), as unpredictable to others as a random
one. Nobody ever reveals its own self seed: the survivors' seeds are reconstructed from the
shares in their headers (:func:`open_my_shares` is what a holder reveals).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedchain.chain import Ledger
from fedchain.chain.ledger import RevealRecord
from fedchain.errors import (
    AggregationError,
    CodecError,
    DigestMismatchError,
    FedchainError,
    StorageError,
    VerificationError,
)
from fedchain.fl import masking
from fedchain.fl.dp import DpSpend
from fedchain.fl.masking import MaskedHeader, MaskingKey, RevealPlan, SealedShare
from fedchain.hashing import sha256, to_hex
from fedchain.protocol.blobs import aggregate_matches
from fedchain.protocol.privacy import MaskedConfig
from fedchain.protocol.rules import Rules
from fedchain.protocol.verify import Exclusion, RoundVerdict, UpdateOutcome, UpdateStatus, VerifiedModel, load_model
from fedchain.records import RoundHistory, RoundStatus, UpdateRecord
from fedchain.storage import BlobStore, cid_of
from fedchain.types import Address, Cid, Digest

logger = logging.getLogger(__name__)

#: The ``rule`` of a masked round's verdict (the audit marks such rounds private).
MASKED_RULE = "masked-fedavg"
#: The HKDF info prefix of a self seed.
SELF_INFO = b"fedchain/self/v1"


def masked_config(rules: Rules) -> MaskedConfig:
    """The manifest's masked-round settings (a ``ValueError`` for a plain federation)."""
    cfg = rules.manifest.privacy_settings.masked
    if cfg is None:
        raise ValueError("the federation's rounds are not masked")
    return cfg


def _ledger_bytes(ledger: Ledger) -> bytes:
    return bytes.fromhex(ledger.address[2:])


def self_seed(key: MaskingKey, *, chain_id: int, ledger: bytes, round_id: int, me: Address) -> bytes:
    """``HKDF-SHA256(sk, salt = chain_id (32 BE) || ledger (20) || round (32 BE), info = "fedchain/self/v1" || me)``."""
    salt = chain_id.to_bytes(32, "big") + ledger + round_id.to_bytes(32, "big")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=masking.SEED_SIZE, salt=salt, info=SELF_INFO + bytes.fromhex(me[2:]))
    return hkdf.derive(key.private_bytes())


def pair_seeds(
    key: MaskingKey, roster: Mapping[Address, bytes], *, me: Address, chain_id: int, ledger: bytes, round_id: int
) -> dict[Address, bytes]:
    """``s_ij`` with every other roster member."""
    out: dict[Address, bytes] = {}
    mine = masking.address_key(me)
    for other, public in roster.items():
        if masking.address_key(other) == mine:
            continue
        low, high = (me, other) if mine < masking.address_key(other) else (other, me)
        out[other] = masking.pair_seed(
            key, public, chain_id=chain_id, ledger=ledger, round_id=round_id, low=low, high=high
        )
    return out


@dataclass(frozen=True)
class MaskedSubmission:
    """A participant's masked update: the blob (uploaded only once its digest is mined) and its seeds."""

    blob: bytes = field(repr=False)
    digest: Digest
    cid: Cid


def build_masked_update(
    delta: Mapping[str, np.ndarray],
    *,
    num_samples: int,
    config: MaskedConfig,
    key: MaskingKey,
    roster: Mapping[Address, bytes],
    me: Address,
    chain_id: int,
    ledger: bytes,
    round_id: int,
    base_hash: Digest,
    dp: DpSpend | None = None,
) -> MaskedSubmission:
    """Quantize, mask with every roster member, commit to the seeds, share the self seed, encode.

    The self seed is split into ``config.share_threshold``-of-``|roster|`` shares, holder ``k`` the
    ``k``-th member in numeric order (this member included), each sealed to its holder and committed.

    Raises
    ------
    ValueError
        A roster smaller than the share threshold (no round with it can be unmasked), or ``me`` not in it.
    """
    members = masking.ordered(roster)
    if len(members) < config.share_threshold:
        raise ValueError(f"a roster of {len(members)} cannot hold {config.share_threshold}-of-n shares")
    q = masking.quantize(delta, num_samples, config.params)
    b = self_seed(key, chain_id=chain_id, ledger=ledger, round_id=round_id, me=me)
    seeds = pair_seeds(key, roster, me=me, chain_id=chain_id, ledger=ledger, round_id=round_id)
    y = masking.mask_update(q, self_seed=b, pair_seeds=seeds, me=me)
    split = masking.split_seed(b, threshold=config.share_threshold, holders=len(members))
    by_key = {masking.address_key(a): a for a in roster}
    if masking.address_key(me) not in by_key:
        raise ValueError(f"{me} is not in the round's roster")
    shares: dict[Address, SealedShare] = {}
    for holder, share in zip(members, split, strict=True):
        sealed = masking.seal_share(
            key, roster[holder], share, chain_id=chain_id, ledger=ledger, round_id=round_id, sender=me, recipient=holder
        )
        shares[holder] = SealedShare(sealed, masking.commit(share, masking.share_salt(round_id, me, holder)))
    header = MaskedHeader(
        round_id=round_id,  # type: ignore[arg-type]
        base=base_hash,
        sender=me,
        samples=num_samples,
        params=config.params,
        self_commitment=masking.commit(b, masking.self_salt(round_id, me)),
        pair_commitments={o: masking.commit(s, masking.pair_salt(round_id, me, o)) for o, s in seeds.items()},
        dp=dp,
        shares=shares,
    )
    blob = masking.encode_masked(y, header)
    return MaskedSubmission(blob, sha256(blob), cid_of(blob))


# --------------------------------------------------------------------------- the round's data


@dataclass(frozen=True)
class MaskedRoundData:
    """What a closed masked round's reveals are checked against: roster, recorded submissions, their headers."""

    round_id: int
    roster: Mapping[Address, bytes]
    submitted: tuple[UpdateRecord, ...]
    headers: Mapping[Address, MaskedHeader]
    problems: Mapping[Address, tuple[str, str]]
    """Recorded submissions whose blob could not be read or decoded: ``(reason, detail)``."""
    close_time: int
    word_sum: np.ndarray | None = field(default=None, compare=False, repr=False)
    """The sum (mod 2**64) of the words of every sender in ``headers``, taken as their blobs were
    read and checked: unmasking uses it when the survivors are exactly those senders, and fetches
    the survivors' blobs again otherwise (``None``: not taken)."""


def _fetch(store: BlobStore, rules: Rules, record: UpdateRecord) -> bytes | bytearray:
    try:
        return store.get_verified(record.cid, record.update_hash, max_size=rules.max_blob_size)
    except DigestMismatchError as err:
        raise CodecError(
            "hash",
            f"blob at {record.cid} hashes to {to_hex(err.actual)}, the ledger records {to_hex(record.update_hash)}",
        ) from None


def read_round(ledger: Ledger, store: BlobStore, rules: Rules, history: RoundHistory) -> MaskedRoundData:
    """The roster, the recorded submissions and their decoded headers (a closed or ended round)."""
    r = int(history.state.round_id)
    cfg = masked_config(rules)
    roster = ledger.roster(r, history.state.opened_block)
    headers: dict[Address, MaskedHeader] = {}
    problems: dict[Address, tuple[str, str]] = {}
    word_sum: np.ndarray | None = None
    size = rules.schema.size
    for record in history.updates:
        who = record.participant
        if who not in roster:
            problems[who] = ("roster", "not in the round's roster (no masking key when it opened)")
            continue
        if record.num_samples > cfg.max_samples:
            problems[who] = ("samples", f"{record.num_samples} samples, above the manifest's cap {cfg.max_samples}")
            continue
        try:
            blob = _fetch(store, rules, record)
            expect = masking.MaskedExpect(
                r, bytes(history.opened.base_hash), who, record.num_samples, cfg.params, tuple(roster), shared=True
            )
            decoded = masking.decode_masked(blob, num_elements=size, expect=expect)
            headers[who] = decoded.header
            word_sum = decoded.words.copy() if word_sum is None else np.add(word_sum, decoded.words, out=word_sum)
            del blob, decoded
        except CodecError as err:
            problems[who] = (err.reason, err.detail)
        except StorageError as err:
            problems[who] = ("unavailable", str(err))
    if len(roster) > cfg.max_participants:
        for who in list(headers):
            problems[who] = (
                "roster",
                f"the roster has {len(roster)} members, above the manifest's {cfg.max_participants}",
            )
            del headers[who]
        word_sum = None
    close_time = ledger.block_timestamp(history.state.closed_block) if history.state.closed_block else 0
    return MaskedRoundData(r, roster, history.updates, headers, problems, close_time, word_sum)


def round_key(history: RoundHistory) -> tuple[int, int, tuple[bytes, ...]]:
    """What a closed round's :class:`MaskedRoundData` depends on: the round, its close block and its recorded updates."""
    return (
        int(history.state.round_id),
        history.state.closed_block,
        tuple(bytes(u.update_hash) for u in history.updates),
    )


def read_round_cached(
    ledger: Ledger, store: BlobStore, rules: Rules, history: RoundHistory, cache: dict[Any, MaskedRoundData]
) -> MaskedRoundData:
    """:func:`read_round` through ``cache``, which keeps the one round last read (by :func:`round_key`).

    A participant reads a closed round to reveal, then verifies the same round before training
    on its aggregate: with one cache for both, it reads (and hashes) the round's blobs once.
    """
    key = round_key(history)
    if key in cache:
        return cache[key]
    data = read_round(ledger, store, rules, history)
    cache.clear()
    if not any(reason == "unavailable" for reason, _ in data.problems.values()):
        cache[key] = data  # a blob this reader could not fetch is fetched again at its next read
    return data


# --------------------------------------------------------------------------- the reveal replay


@dataclass(frozen=True)
class RevealState:
    """Where a masked round's reveals stand at time ``now``."""

    plan: RevealPlan
    self_seeds: Mapping[Address, bytes]
    """The survivors' self seeds reconstructed from their shares (only once ``done``)."""
    pair_seeds: Mapping[tuple[Address, Address], bytes]
    deadline: int | None
    """The current phase's deadline (``None`` once ``done`` or ``abandon``)."""
    wrong: tuple[tuple[Address, str], ...]
    """Reveals that do not match their commitment (or cannot be checked): who and what."""
    dropped: Mapping[Address, str]
    """Members of S_0 moved out of S, and at which phase."""
    shares: Mapping[tuple[Address, Address], bytes] = field(default_factory=dict)
    """Counted shares, keyed ``(owner, holder)``."""
    why: str | None = None
    """Why the round is abandoned (``plan.phase == "abandon"``)."""


def _check_pair(data: MaskedRoundData, who: Address, other: Address, seed: bytes) -> bool:
    header = data.headers.get(who)
    if header is None or len(seed) != masking.SEED_SIZE:
        return False
    want = {masking.address_key(a): c for a, c in header.pair_commitments.items()}.get(masking.address_key(other))
    return want == masking.commit(seed, masking.pair_salt(data.round_id, who, other))


def open_my_shares(
    key: MaskingKey,
    data: MaskedRoundData,
    owners: Sequence[Address],
    *,
    me: Address,
    chain_id: int,
    ledger: bytes,
) -> dict[Address, bytes]:
    """The shares of ``owners``' self seeds sealed to ``me``, opened and checked against their commitments.

    An owner whose share for ``me`` does not open or does not match its commitment is left out
    (it sealed something else; it cannot be attributed publicly, and if too few shares of its
    seed are revealed the round is abandoned).
    """
    out: dict[Address, bytes] = {}
    for owner in owners:
        header = data.headers.get(owner)
        sealed = None if header is None else header.shares.get(me)
        if header is None or sealed is None:
            continue
        try:
            share = masking.open_share(
                key,
                data.roster[owner],
                sealed.sealed,
                chain_id=chain_id,
                ledger=ledger,
                round_id=data.round_id,
                sender=owner,
                recipient=me,
            )
        except masking.ShareError:
            logger.warning("round %d: the share %s sealed to %s does not open", data.round_id, owner, me)
            continue
        if not masking.check_share(header, me, share):
            logger.warning(
                "round %d: the share %s sealed to %s is not the one it committed to", data.round_id, owner, me
            )
            continue
        out[owner] = share
    return out


def replay_reveals(
    data: MaskedRoundData, reveals: Sequence[RevealRecord], *, now: int, config: MaskedConfig
) -> RevealState:
    """The round's reveal phases replayed from its events (see the module docstring)."""
    roster = tuple(data.roster)
    survivors = tuple(u.participant for u in data.submitted if u.participant in data.headers)
    pairs: dict[tuple[Address, Address], bytes] = {}
    shares: dict[tuple[Address, Address], bytes] = {}
    wrong: list[tuple[Address, str]] = []
    dropped: dict[Address, str] = {}
    threshold = config.share_threshold

    def plan_now() -> RevealPlan:
        return masking.plan_reveals(
            roster,
            survivors,
            pairs_revealed=tuple(pairs),
            shares_revealed=tuple(shares),
            threshold=threshold,
            minimum=config.min_survivors,
        )

    def ended(plan: RevealPlan, why: str | None, selves: Mapping[Address, bytes] | None = None) -> RevealState:
        return RevealState(plan, selves or {}, pairs, None, tuple(wrong), dropped, shares, why)

    plan = plan_now()
    start = data.close_time
    pending = sorted(reveals, key=lambda x: (x.block_number, x.log_index))
    i = 0
    while plan.phase in ("pairs", "shares"):
        deadline = start + config.phase_seconds
        advanced = False
        while i < len(pending) and pending[i].timestamp <= deadline:
            rv = pending[i]
            i += 1
            who = rv.participant
            if plan.phase == "pairs":
                asked = set(plan.pair_requests.get(who, ()))
                for other, seed in rv.pair_seeds.items():
                    if other not in asked:
                        continue
                    if _check_pair(data, who, other, seed):
                        pairs[(who, other)] = seed
                    else:
                        wrong.append((who, f"pair seed with {other}"))
            else:
                asked = set(plan.share_requests.get(who, ()))
                for owner, share in rv.shares.items():
                    if owner not in asked:
                        continue
                    if masking.check_share(data.headers[owner], who, share):
                        shares[(owner, who)] = share
                    else:
                        wrong.append((who, f"share of {owner}'s self seed"))
            new = plan_now()
            if new.phase != plan.phase:
                plan, start, advanced = new, rv.timestamp, True
                break
            plan = new
        if advanced:
            continue
        if now <= deadline:
            return RevealState(plan, {}, pairs, deadline, tuple(wrong), dropped, shares)
        if plan.phase == "shares":
            short = [o for o in plan.survivors if sum(1 for (w, _) in shares if w == o) < threshold]
            why = f"the share phase ended with {len(short)} self seeds short of {threshold} shares: " + ", ".join(short)
            return ended(masking.RevealPlan("abandon", plan.survivors, {}), why)
        for who in plan.laggards:
            dropped[who] = plan.phase
        survivors = masking.next_survivors(plan)
        # reveals of the phase that ended are not re-read: a survivor's later reveal of the new phase counts
        plan, start = plan_now(), deadline
    if plan.phase == "abandon":
        need = max(config.min_survivors, threshold)
        return ended(plan, f"{len(plan.survivors)} survivors, below the {need} needed (min_survivors, share_threshold)")
    selves: dict[Address, bytes] = {}
    for owner in plan.survivors:
        held = {h: v for (o, h), v in shares.items() if o == owner}
        try:
            selves[owner] = masking.reconstruct_seed(roster, data.headers[owner], held, threshold=threshold)
        except masking.RevealError as err:
            return ended(masking.RevealPlan("abandon", plan.survivors, {}), f"round {data.round_id}: {err}")
    return ended(plan, None, selves)


# --------------------------------------------------------------------------- the aggregate


def unmask_aggregate(
    data: MaskedRoundData,
    state: RevealState,
    store: BlobStore,
    rules: Rules,
    base: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], int]:
    """The new model from the survivors' masked words and the counted reveals, and the survivors' sample total.

    Raises
    ------
    AggregationError
        A survivor's blob is unreadable now, two survivors' pair commitments disagree, a reveal
        is missing, or the decoded mean is beyond :func:`masking.aggregate_norm_bound`.
    """
    cfg = masked_config(rules)
    survivors = state.plan.survivors
    records = {u.participant: u for u in data.submitted}
    size = rules.schema.size
    total_words: np.ndarray | None = None
    if data.word_sum is not None and set(survivors) == set(data.headers):
        total_words = data.word_sum.copy()  # the survivors' words, summed as their blobs were read and checked
    for who in survivors if total_words is None else ():
        try:
            words = masking.decode_masked(_fetch(store, rules, records[who]), num_elements=size).words
        except (CodecError, StorageError) as err:
            raise AggregationError(f"round {data.round_id}: participant {who}'s masked update: {err}") from None
        total_words = words.copy() if total_words is None else np.add(total_words, words, out=total_words)
    assert total_words is not None
    dropped = [a for a in data.roster if a not in survivors]
    try:
        sum_q = masking.unmask(
            total_words,
            roster=tuple(data.roster),
            survivors=survivors,
            headers={a: data.headers[a] for a in survivors},
            self_seeds=dict(state.self_seeds),
            pair_seeds={k: v for k, v in state.pair_seeds.items() if k[0] in survivors and k[1] in dropped},
        )
    except (masking.MaskingError, ValueError) as err:
        raise AggregationError(f"round {data.round_id}: {err}") from None
    n = sum(records[a].num_samples for a in survivors)
    mean = masking.dequantize(sum_q, n, cfg.params)
    norm = math.sqrt(float(np.dot(mean, mean)))
    bound = masking.aggregate_norm_bound(cfg.params, size, len(survivors), n)
    if not norm <= bound:
        raise AggregationError(
            f"round {data.round_id}: the decoded mean has norm {norm!r}, above the bound {bound!r} of clipped updates"
        )
    shapes = {k: tuple(np.shape(v)) for k, v in base.items()}
    flat = masking.apply_masked_aggregate(masking.flatten(base), sum_q, n, rules.manifest.server_lr, cfg.params)
    return masking.unflatten(flat, shapes), n


# --------------------------------------------------------------------------- verification


def outcomes_of(
    data: MaskedRoundData, state: RevealState | None, included: tuple[Address, ...]
) -> tuple[list[UpdateOutcome], list[Exclusion]]:
    outcomes: list[UpdateOutcome] = []
    excluded: list[Exclusion] = []
    wrong = {} if state is None else {w: what for w, what in state.wrong}
    for u in data.submitted:
        header = data.headers.get(u.participant)
        metrics: dict[str, float] = {}
        if header is not None and header.dp is not None:
            metrics = {k: float(v) for k, v in header.dp.to_metadata().items()}
        reason: tuple[str, str] | None = data.problems.get(u.participant)
        lied = wrong.get(u.participant)
        if reason is None and lied is not None and lied.startswith("pair seed"):
            reason = ("wrong-reveal", f"{lied} does not match its commitment")
        if reason is None and state is not None and u.participant in state.dropped:
            reason = ("dropped", f"did not reveal in the {state.dropped[u.participant]} phase")
        if reason is not None:
            excluded.append(Exclusion(u.participant, *reason))
            outcomes.append(UpdateOutcome(u, UpdateStatus.EXCLUDED, reason[0], reason[1], metrics=metrics))
        else:
            # a wrong share is named, and ignored: its revealer stays in S (its own update is unmasked as any other's)
            note = ("wrong-share", f"revealed a {lied} that does not match its commitment") if lied else (None, None)
            status = UpdateStatus.INCLUDED if u.participant in included else UpdateStatus.VALID
            outcomes.append(UpdateOutcome(u, status, note[0], note[1], metrics=metrics))
    return outcomes, excluded


def verify_masked_round(
    ledger: Ledger,
    history: RoundHistory,
    store: BlobStore,
    rules: Rules,
    *,
    expected_base: Digest,
    base: VerifiedModel | None = None,
    cache: dict[Any, MaskedRoundData] | None = None,
) -> tuple[RoundVerdict, VerifiedModel | None]:
    """Verify one masked round: lineage, the replayed reveals, and the aggregate recomputed exactly.

    ``cache``: the caller's :func:`read_round_cached` cache: the round read there is used unless a
    blob was unavailable then (the round's blobs are then read once for revealing and verifying).
    """
    r = int(history.state.round_id)
    status = history.state.status
    failures: list[VerificationError] = []
    if history.opened.base_hash != expected_base:
        failures.append(
            VerificationError(r, "lineage", expected=to_hex(expected_base), actual=to_hex(history.opened.base_hash))
        )
    if status is RoundStatus.OPEN or history.state.closed_block == 0:
        outcomes = [UpdateOutcome(u, UpdateStatus.VALID) for u in history.updates]
        return RoundVerdict(r, status, (), (), (), None, tuple(failures), tuple(outcomes), MASKED_RULE), None
    cfg = masked_config(rules)
    cached = None if cache is None else cache.get(round_key(history))
    if cached is None or any(reason == "unavailable" for reason, _ in cached.problems.values()):
        data = read_round(ledger, store, rules, history)  # a blob missing then may be there now: read again
    else:
        data = cached
    end_block = history.state.end_block or int(ledger.chain.w3.eth.block_number)
    now = ledger.block_timestamp(end_block) if history.state.end_block else ledger.chain.now()
    state = replay_reveals(data, ledger.reveals(r, history.state), now=now, config=cfg)
    missing = tuple(a for a in data.roster if a not in {u.participant for u in history.updates})
    agg = history.aggregate
    included = agg.included if agg is not None else ()
    outcomes, excluded = outcomes_of(data, state, tuple(included))

    def verdict(digest: Digest | None = None) -> RoundVerdict:
        return RoundVerdict(
            r, status, tuple(included), tuple(excluded), missing, digest, tuple(failures), tuple(outcomes), MASKED_RULE
        )

    if status is not RoundStatus.FINALIZED or agg is None:
        return verdict(), None
    if state.plan.phase != "done":
        failures.append(
            VerificationError(
                r, "reveals", expected="every reveal needed to unmask", actual=f"phase {state.plan.phase}"
            )
        )
        return verdict(), None
    if {a.lower() for a in included} != {a.lower() for a in state.plan.survivors}:
        failures.append(
            VerificationError(r, "inclusion", expected=",".join(state.plan.survivors), actual=",".join(included))
        )
        return verdict(), None
    if failures:
        return verdict(), None
    try:
        params_base = (
            dict(base.params)
            if base is not None and base.cid == history.opened.base_cid and base.digest == history.opened.base_hash
            else load_model(
                store, rules, history.opened.base_cid, history.opened.base_hash, round_id=r, what="base model"
            )
        )
        params, total = unmask_aggregate(data, state, store, rules, params_base)
    except (AggregationError, VerificationError) as err:
        who = next((u.participant for u in history.updates if u.participant in str(err)), None)
        failures.append(
            VerificationError(
                r, "aggregate (recomputed)", participant=who, expected="an unmasked aggregate", actual=str(err)
            )
        )
        return verdict(), None
    try:
        stored = store.get_verified(agg.cid, agg.aggregate_hash, max_size=rules.max_blob_size)
        same = aggregate_matches(stored, params, rules, round_id=r, base_hash=expected_base, num_samples=total)
    except (StorageError, CodecError, FedchainError) as err:
        failures.append(
            VerificationError(
                r, "aggregate blob", expected=f"{to_hex(agg.aggregate_hash)} at {agg.cid}", actual=str(err)
            )
        )
        return verdict(), None
    if not same:
        failures.append(
            VerificationError(
                r, "aggregate (recomputed)", expected=to_hex(agg.aggregate_hash), actual="a different model"
            )
        )
        return verdict(), None
    return verdict(agg.aggregate_hash), VerifiedModel(agg.cid, agg.aggregate_hash, params)


__all__ = [
    "MASKED_RULE",
    "MaskedRoundData",
    "MaskedSubmission",
    "RevealState",
    "build_masked_update",
    "masked_config",
    "open_my_shares",
    "outcomes_of",
    "pair_seeds",
    "read_round",
    "read_round_cached",
    "replay_reveals",
    "round_key",
    "self_seed",
    "unmask_aggregate",
    "verify_masked_round",
]
