"""The client mod: after the app's train function, record the reply's update on chain from the node's own key.

Add it to a ClientApp: ``app = ClientApp(mods=[fedchain_mod])``. A train message of an audited
run carries a ``fedchain`` ConfigRecord (the ledger and the round); the mod then

1. verifies the ledger's history from its own checkpoint up to the round (chain of custody) and
   refuses to train unless the message's arrays are, bit for bit, the model the round builds on;
2. calls the app's train function;
3. encodes the reply's arrays canonically (``delta = trained - base``, float32, the reply's
   scalar metrics in the header), puts the blob in the store and submits its digest from the
   node's key;
4. adds the record (round, participant, CID, digest) to the reply, so the server can match it.

A train message without the record (a plain run) goes to the app untouched, and so does every
evaluate and query message.
"""

from __future__ import annotations

import logging
import threading

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fedchain.chain import Ledger, Signer
from fedchain.errors import AlreadySubmittedError, ConfigError, VerificationError
from fedchain.flower._backends import backends
from fedchain.flower._config import settings_from_context
from fedchain.flower._records import (
    ENROLL_KEY,
    RECORD_KEY,
    config_int,
    config_str,
    reply_update,
    same_arrays,
    single,
    to_arrays,
)
from fedchain.hashing import parse_digest, sha256, short, to_hex
from fedchain.protocol import Checkpoint, Rules, advance, genesis, load_rules
from fedchain.records import RoundStatus
from fedchain.storage import BlobStore
from fedchain.types import Cid

logger = logging.getLogger(__name__)

_CHECKPOINT_KEY = "fedchain-checkpoint"
_lock = threading.Lock()
_rules: dict[tuple[str, str], tuple[Ledger, Rules]] = {}


def _ledger(
    address: str, chain_key: str, settings_ledger: str | None, chain: object, store: BlobStore
) -> tuple[Ledger, Rules]:
    if settings_ledger is not None and settings_ledger.lower() != address.lower():
        raise VerificationError(0, "ledger", expected=settings_ledger, actual=address)
    with _lock:
        key = (chain_key, address.lower())
        if key not in _rules:
            ledger = Ledger(chain, address)  # type: ignore[arg-type]  # checks the code at the address
            _rules[key] = (ledger, load_rules(ledger, store))
        return _rules[key]


def _checkpoint(context: Context, ledger: Ledger, store: BlobStore, rules: Rules) -> Checkpoint:
    saved = context.state.config_records.get(_CHECKPOINT_KEY)
    if saved is not None and saved.get("ledger") == ledger.address:
        return Checkpoint(
            config_int(saved, "next-round"), Cid(config_str(saved, "cid")), parse_digest(config_str(saved, "digest"))
        )
    return genesis(ledger, store, rules, keep=False)


def _save(context: Context, ledger: Ledger, cp: Checkpoint) -> None:
    context.state[_CHECKPOINT_KEY] = ConfigRecord(
        {"ledger": ledger.address, "next-round": cp.next_round, "cid": str(cp.cid), "digest": to_hex(cp.digest)}
    )


def _enroll(msg: Message, signer: Signer, name: str) -> Message:
    answer = ConfigRecord({"participant": signer.address, "name": name})
    return Message(RecordDict({ENROLL_KEY: answer}), reply_to=msg)


def fedchain_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Record this node's train replies on the ledger (see the module docstring).

    Raises
    ------
    VerificationError
        If the history does not verify or the message's arrays are not the round's base: nothing is trained.
    """
    if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
        return call_next(msg, context)
    content = msg.content
    settings = settings_from_context(context.node_config, context.run_config)
    if ENROLL_KEY in content.config_records:
        name = f"node-{settings.partition_id}" if settings.partition_id is not None else f"node-{context.node_id}"
        return _enroll(msg, settings.signer("node"), name)
    info = content.config_records.get(RECORD_KEY)
    if info is None:
        return call_next(msg, context)
    signer = settings.signer("node")
    chain, store = backends(settings)
    ledger, rules = _ledger(
        config_str(info, "ledger"), f"{settings.rpc}|{settings.store}", settings.ledger, chain, store
    )
    r = config_int(info, "round")
    arrays_key = config_str(info, "arrays-key")
    weight_key = config_str(info, "weight-key")

    # chain of custody: verify every round up to r, and train only on the model round r builds on
    cp, _ = advance(ledger, store, rules, _checkpoint(context, ledger, store, rules), r, keep=False)
    _save(context, ledger, cp)
    state = ledger.round_state(r)
    if state.status is not RoundStatus.OPEN or ledger.last_aggregate() != cp.digest:
        raise VerificationError(
            r,
            "round base",
            expected=f"open on {to_hex(cp.digest)}",
            actual=f"{state.status.name.lower()} on {to_hex(ledger.last_aggregate())}",
        )
    base = cp.model(store, rules).params
    sent = single(content.array_records, "ArrayRecord", arrays_key)
    if not same_arrays(to_arrays(sent, rules.schema), base):  # type: ignore[arg-type]
        raise VerificationError(
            r, "base model", expected=f"the verified model {to_hex(cp.digest)}", actual="other arrays"
        )

    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    update = reply_update(
        reply.content,
        base,
        rules.schema,
        round_id=r,
        base_hash=cp.digest,
        sender=signer.address,
        arrays_key=arrays_key,
        weight_key=weight_key,
    )
    digest = sha256(update.blob)
    cid = store.put(update.blob)
    store.pin(cid)
    try:
        tx = ledger.submit_update(signer, r, digest, cid, update.num_samples)
        logger.info("node %d: round %d update %s recorded (gas %d)", context.node_id, r, short(digest), tx.gas_used)
    except AlreadySubmittedError:
        recorded = ledger.update_hash(r, signer.address)
        if recorded != digest:
            raise ConfigError("fedchain", f"round {r}: this node already recorded a different update") from None
    reply.content[RECORD_KEY] = ConfigRecord(
        {"round": r, "participant": signer.address, "cid": str(cid), "digest": to_hex(digest)}
    )
    return reply


__all__ = ["fedchain_mod"]
