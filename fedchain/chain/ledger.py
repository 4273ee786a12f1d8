"""The typed ledger wrapper: deploy, transact as an actor, read state and history.

Reads return frozen dataclasses from :mod:`fedchain.records`. Writes take the acting
:class:`~fedchain.chain.accounts.Signer`, are simulated first (so a rejection surfaces as a
:class:`~fedchain.errors.ContractRevertError` naming the contract's custom error and its
arguments, and costs no gas), then signed locally and sent raw.

Only known code is trusted: :class:`Ledger` refuses an address whose runtime code is not the
shipped artifact's ``deployedBytecode`` (the immutables' byte ranges masked) with
:class:`~fedchain.errors.UnknownContractError`, before it reads anything else there. A look-alike
contract that emits the same events without enforcing the rules is not a ledger.

History is read from events, one round at a time: the contract stores the blocks a round was
opened, closed and ended in, so reading a round's events queries only those few blocks, never
the chain from block 0 (eth-tester's ``get_logs`` walks every receipt of its range, taking
seconds over a few hundred blocks).

Replaying many rounds (:meth:`Ledger.history`, what an audit does) reads the ledger's round
events in consecutive windows of :data:`HISTORY_WINDOW_BLOCKS` blocks, starting where the
first round wanted was opened: one ``eth_getLogs`` per window instead of two RPC calls per
round, and never one query over the whole history. An ended round's state is then taken
from its own events, which carry exactly what the contract stored (see
:meth:`Ledger.history`). Logs are decoded here with ``eth_abi`` from the contract's ABI,
about ten times faster than web3's generic event processing.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import rlp
from eth_abi.abi import decode as abi_decode
from eth_abi.codec import ABICodec
from eth_abi.exceptions import DecodingError
from eth_typing import ChecksumAddress
from eth_utils.abi import collapse_if_tuple, event_abi_to_log_topic, function_abi_to_4byte_selector
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3.contract import Contract

from fedchain.chain._revert import RevertDecoder
from fedchain.chain.accounts import Signer
from fedchain.chain.connection import Chain
from fedchain.errors import (
    ChainConnectionError,
    ChainError,
    ContractRevertError,
    TransactionError,
    UnknownContractError,
)
from fedchain.records import (
    AggregateRecord,
    LedgerInfo,
    ParticipantInfo,
    RoundAbandonedRecord,
    RoundClosedRecord,
    RoundHistory,
    RoundOpened,
    RoundState,
    RoundStatus,
    TxResult,
    UpdateRecord,
)
from fedchain.types import Address, Cid, Digest, Gas, RoundId

logger = logging.getLogger(__name__)

#: Largest block range asked of ``eth_getLogs`` at once.
LOG_PAGE_BLOCKS = 2_000
#: Blocks per ``eth_getLogs`` when :meth:`Ledger.history` replays many rounds: a few dozen
#: rounds of a busy ledger per query, and a bounded answer however long the history.
HISTORY_WINDOW_BLOCKS = 256
_ROUND_EVENTS = ("RoundOpened", "UpdateSubmitted", "RoundClosed", "RoundFinalized", "RoundAbandoned")
#: The events that end a round: nothing about it changes after one of them.
_END_EVENTS = frozenset({"RoundFinalized", "RoundAbandoned"})
_GAS_MARGIN_NUM, _GAS_MARGIN_DEN = 6, 5  # 20 % over the estimate
_PRIORITY_FEE = 10**9


#: The private-round events, read apart from the round events (plain rounds never query them).
_ROSTER_EVENTS = ("ParticipantRegistered", "ParticipantRemoved", "MaskingKeyRegistered")
_REVEAL_EVENTS = ("PairSeedsRevealed", "SharesRevealed")


@dataclass(frozen=True)
class RevealRecord:
    """A ``PairSeedsRevealed`` or ``SharesRevealed`` event of a closed private round.

    ``pair_seeds`` maps each other member to the revealed seed (``PairSeedsRevealed``);
    ``shares`` maps each owner to the revealer's 32-byte share of the owner's self seed
    (``SharesRevealed``). An event's addresses are unique in its map (a repeated one keeps its
    first word). ``timestamp`` is its block's.
    """

    round_id: RoundId
    participant: Address
    pair_seeds: Mapping[Address, bytes]
    shares: Mapping[Address, bytes]
    block_number: int
    log_index: int
    timestamp: int
    tx_hash: str


def _artifact() -> dict[str, Any]:
    from fedchain.chain.compile import load_artifact

    return dict(load_artifact())


@functools.lru_cache(maxsize=1)
def _known_runtime() -> tuple[bytes, tuple[tuple[int, int], ...]]:
    """The shipped runtime code and the ``(start, length)`` byte ranges of its immutables."""
    artifact = _artifact()
    code = bytes(HexBytes(artifact["deployedBytecode"]))
    ranges = sorted(
        (int(ref["start"]), int(ref["length"]))
        for refs in artifact.get("immutableReferences", {}).values()
        for ref in refs
    )
    if not ranges:
        raise ChainError("the shipped ledger artifact has no immutableReferences: recompile it (`fedchain compile`)")
    return code, tuple(ranges)


def code_mismatch(code: bytes) -> str | None:
    """Why ``code`` is not the shipped ledger's runtime code (immutables masked), or ``None`` if it is.

    Parameters
    ----------
    code:
        The runtime code read at an address (``eth_getCode``).
    """
    expected, ranges = _known_runtime()
    code = bytes(code)
    if not code:
        return "no code at the address"
    if len(code) != len(expected):
        return f"{len(code)} bytes of runtime code, the shipped ledger has {len(expected)}"
    masked = bytearray(code)
    for start, length in ranges:
        masked[start : start + length] = expected[start : start + length]
    if masked == expected:
        return None
    first = next(i for i, (a, b) in enumerate(zip(masked, expected, strict=True)) if a != b)
    return f"runtime code differs from the shipped ledger's at byte {first}"


def create_address(sender: str, nonce: int) -> Address:
    """The address of the contract ``sender`` creates with transaction ``nonce`` (``CREATE``)."""
    encoded = rlp.encode([to_canonical_address(sender), int(nonce)])
    return Address(_checksummed("0x" + keccak(encoded)[12:].hex()))


@dataclass(frozen=True)
class _Log:
    """One of the ledger's events, decoded: what the history readers need of a log."""

    name: str
    args: Mapping[str, Any]
    block_number: int
    log_index: int
    tx_hash: str


class _Functions:
    """The ledger's functions, encoded and decoded with the chain's ABI codec.

    web3's contract objects look the ABI entry up, validate and normalize the arguments and the
    results again on every call: about 2 ms of a 3 ms read on a local node. The selectors and
    types are worked out here once. The codec is the chain's own web3 codec (strict bytes), so a
    value web3 refuses is refused here too; addresses are returned checksummed, as web3 returns
    them.
    """

    def __init__(self, abi: list[dict[str, Any]], codec: ABICodec) -> None:
        self._codec = codec
        self._functions: dict[str, tuple[bytes, list[str], list[str]]] = {}
        for item in abi:
            if item.get("type") != "function":
                continue
            if item["name"] in self._functions:
                raise ChainError(f"function {item['name']}: overloaded functions are not supported")
            self._functions[item["name"]] = (
                bytes(function_abi_to_4byte_selector(item)),  # type: ignore[arg-type]  # an ABI entry read from JSON
                [collapse_if_tuple(i) for i in item["inputs"]],
                [collapse_if_tuple(o) for o in item["outputs"]],
            )

    def encode(self, name: str, *args: Any) -> str:
        """The call data of ``name(*args)``, as 0x-prefixed hex."""
        selector, inputs, _ = self._functions[name]
        return "0x" + (selector + bytes(self._codec.encode(inputs, args))).hex()

    def decode(self, name: str, data: bytes) -> tuple[Any, ...]:
        """What ``name`` returned, one value per output (a struct as a tuple).

        Raises
        ------
        ChainError
            If ``data`` is not such a return value (no code at the address, e.g. a node that
            lost its state: worth reading again, as web3's ``BadFunctionCallOutput`` was).
        """
        outputs = self._functions[name][2]
        try:
            values = self._codec.decode(outputs, data)
        except DecodingError as err:
            raise ChainError(f"{name}() returned {len(data)} bytes that are not its {outputs}: {err}") from err
        return tuple(_normalize(kind, v) for kind, v in zip(outputs, values, strict=True))


class _EventDecoder:
    """Decodes the ledger's logs with ``eth_abi``, as web3's event processing would (addresses checksummed)."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._events: dict[bytes, tuple[str, list[tuple[str, str]], list[tuple[str, str]], list[str]]] = {}
        self.topics: dict[str, bytes] = {}
        for item in abi:
            if item.get("type") != "event" or item.get("anonymous"):
                continue
            inputs = item["inputs"]
            indexed = [(i["name"], i["type"]) for i in inputs if i["indexed"]]
            plain = [(i["name"], i["type"]) for i in inputs if not i["indexed"]]
            if any(t in ("string", "bytes") or t.endswith("]") for _, t in indexed):  # topics hold their hashes
                raise ChainError(f"event {item['name']}: indexed dynamic types are not supported")
            topic = bytes(event_abi_to_log_topic(item))  # type: ignore[arg-type]  # an ABI entry read from JSON
            self._events[topic] = (item["name"], indexed, plain, [i["name"] for i in inputs])
            self.topics[item["name"]] = topic

    def decode(self, raw: Mapping[str, Any]) -> _Log:
        topics = [bytes(HexBytes(t)) for t in raw["topics"]]
        name, indexed, plain, order = self._events[topics[0]]
        if len(topics) != 1 + len(indexed):
            raise ChainError(f"{name} log with {len(topics)} topics")
        values: dict[str, Any] = {}
        for (arg, kind), topic in zip(indexed, topics[1:], strict=True):
            if kind == "uint256":
                values[arg] = int.from_bytes(topic, "big")
            elif kind == "address" and len(topic) == 32 and not any(topic[:12]):
                values[arg] = _checksummed("0x" + topic[12:].hex())
            else:
                values[arg] = _normalize(kind, abi_decode([kind], topic)[0])
        for (arg, kind), value in zip(
            plain, abi_decode([k for _, k in plain], bytes(HexBytes(raw["data"]))), strict=True
        ):
            values[arg] = _normalize(kind, value)
        return _Log(
            name=name,
            args={arg: values[arg] for arg in order},
            block_number=int(raw["blockNumber"]),
            log_index=int(raw["logIndex"]),
            tx_hash=HexBytes(raw["transactionHash"]).to_0x_hex(),
        )


def _normalize(kind: str, value: Any) -> Any:
    if kind == "address":
        return _checksummed(value)
    if kind == "address[]":
        return tuple(_checksummed(v) for v in value)
    return value


@functools.lru_cache(maxsize=4096)
def _checksummed(address: str) -> str:
    """EIP-55 form, remembered: a ledger's few participants recur in every round (a keccak each otherwise)."""
    return str(to_checksum_address(address))


class Ledger:
    """A deployed ``FederatedLedger`` on a :class:`~fedchain.chain.connection.Chain`.

    Parameters
    ----------
    chain:
        The connection to use.
    address:
        The ledger contract's address.

    Raises
    ------
    UnknownContractError
        The runtime code at ``address`` is not the shipped ledger's (checked before anything
        else is read there).
    """

    def __init__(self, chain: Chain, address: str) -> None:
        try:
            checksummed = Address(chain.w3.to_checksum_address(address))
        except ValueError as err:
            raise ChainError(f"not an Ethereum address: {address!r}") from err
        problem = code_mismatch(bytes(chain.w3.eth.get_code(_cs(checksummed))))
        if problem is not None:
            raise UnknownContractError(checksummed, f"{problem} (on {chain.endpoint})")
        artifact = _artifact()
        self.chain = chain
        self.address = checksummed
        self._contract: Contract = chain.w3.eth.contract(address=_cs(self.address), abi=artifact["abi"])
        self._functions = _Functions(artifact["abi"], chain.w3.codec)
        self._decoder = RevertDecoder(artifact["abi"])
        self._events = _EventDecoder(artifact["abi"])
        self._info: LedgerInfo | None = None
        self._created: _Log | None = None
        self._timestamps: dict[int, int] = {}

    # ------------------------------------------------------------------ deployment

    @classmethod
    def deploy(
        cls,
        chain: Chain,
        coordinator: Signer,
        genesis_hash: Digest,
        genesis_cid: Cid,
        manifest_hash: Digest,
        manifest_cid: Cid,
    ) -> tuple[Ledger, TxResult]:
        """Deploy a new ledger with ``coordinator`` as its coordinator.

        Parameters
        ----------
        genesis_hash, genesis_cid:
            The model round 0 builds on (its digest is stored, its CID emitted).
        manifest_hash, manifest_cid:
            The federation manifest (its digest is an immutable, its CID emitted).

        Returns
        -------
        The ledger and the deployment transaction.
        """
        artifact = _artifact()
        factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        decoder = RevertDecoder(artifact["abi"])
        data = factory.constructor(
            bytes(genesis_hash), str(genesis_cid), bytes(manifest_hash), str(manifest_cid)
        ).data_in_transaction
        result, receipt = _send(chain, coordinator, "deploy ledger", None, data, decoder)
        address = receipt["contractAddress"]
        if address is None:
            raise TransactionError("deploy ledger", "no contract address in receipt", result.tx_hash)
        return cls(chain, address), result

    @classmethod
    def find_deployment(
        cls,
        chain: Chain,
        coordinator: Address | str,
        *,
        genesis_hash: Digest,
        manifest_hash: Digest,
        max_nonces: int | None = None,
    ) -> Ledger | None:
        """The newest ledger ``coordinator`` deployed with this genesis model and manifest, if any.

        Looks at the ``CREATE`` address of each of the coordinator's past nonces, newest
        first (one ``eth_getCode`` each), so that a deployment retried after a crash finds the
        ledger the first attempt made instead of deploying a second one.

        Parameters
        ----------
        coordinator:
            The deploying account.
        genesis_hash, manifest_hash:
            What the ledger must have been deployed with.
        max_nonces:
            Look at most at this many of the newest nonces (default: all of them).

        Returns
        -------
        The ledger, or ``None`` if no known ledger there has that coordinator, genesis and manifest.
        """
        sender = Address(_checksummed(str(coordinator)))
        nonce = int(chain.w3.eth.get_transaction_count(_cs(sender), "latest"))
        oldest = 0 if max_nonces is None else max(0, nonce - int(max_nonces))
        for n in range(nonce - 1, oldest - 1, -1):
            address = create_address(sender, n)
            if code_mismatch(bytes(chain.w3.eth.get_code(_cs(address)))) is not None:
                continue
            ledger = cls(chain, address)
            info = ledger.info()
            if info.coordinator == sender and info.genesis_hash == genesis_hash and info.manifest_hash == manifest_hash:
                logger.info("found ledger %s deployed by %s with nonce %d", address, sender, n)
                return ledger
        return None

    # ------------------------------------------------------------------ coordinator writes

    def register_participant(self, coordinator: Signer, participant: str, max_samples: int) -> TxResult:
        """Register ``participant`` with a cap of ``max_samples`` declared samples per update."""
        fn = self._functions.encode("registerParticipant", _checksum(self, participant), int(max_samples))
        return self._transact(coordinator, f"register {participant}", fn)

    def remove_participant(self, coordinator: Signer, participant: str) -> TxResult:
        """Remove ``participant``; its history stays."""
        fn = self._functions.encode("removeParticipant", _checksum(self, participant))
        return self._transact(coordinator, f"remove {participant}", fn)

    def open_round(
        self,
        coordinator: Signer,
        round_id: int,
        base_hash: Digest,
        base_cid: Cid,
        deadline: int,
        min_updates: int,
    ) -> TxResult:
        """Open ``round_id`` on the base model ``base_hash``."""
        fn = self._functions.encode(
            "openRound", int(round_id), bytes(base_hash), str(base_cid), int(deadline), int(min_updates)
        )
        return self._transact(coordinator, f"open round {round_id}", fn)

    def close_round(self, coordinator: Signer, round_id: int) -> TxResult:
        """Close the open round ``round_id``: no update can be recorded in it afterwards."""
        fn = self._functions.encode("closeRound", int(round_id))
        return self._transact(coordinator, f"close round {round_id}", fn)

    def abandon_round(self, coordinator: Signer, round_id: int) -> TxResult:
        """End the open or closed round ``round_id`` without an aggregate."""
        fn = self._functions.encode("abandonRound", int(round_id))
        return self._transact(coordinator, f"abandon round {round_id}", fn)

    def finalize_round(
        self,
        coordinator: Signer,
        round_id: int,
        aggregate_hash: Digest,
        aggregate_cid: Cid,
        included: Sequence[str],
    ) -> TxResult:
        """Record the aggregate of the closed round ``round_id`` computed from the updates of ``included``.

        ``included`` is sorted here (the contract requires ascending address order).
        """
        ordered = sorted((_checksum(self, a) for a in included), key=lambda a: int(a, 16))
        fn = self._functions.encode("finalizeRound", int(round_id), bytes(aggregate_hash), str(aggregate_cid), ordered)
        return self._transact(coordinator, f"finalize round {round_id}", fn)

    # ------------------------------------------------------------------ participant writes

    def submit_update(
        self, participant: Signer, round_id: int, update_hash: Digest, cid: Cid, num_samples: int
    ) -> TxResult:
        """Record ``participant``'s update for ``round_id``, from its own account."""
        fn = self._functions.encode("submitUpdate", int(round_id), bytes(update_hash), str(cid), int(num_samples))
        return self._transact(participant, f"submit update for round {round_id}", fn)

    # ------------------------------------------------------------------ private rounds

    def register_masking_key(self, participant: Signer, public_key: bytes) -> TxResult:
        """Publish ``participant``'s 32-byte masking public key, from its own account."""
        if len(public_key) != 32:
            raise ChainError(f"a masking public key is 32 bytes, got {len(public_key)}")
        fn = self._functions.encode("registerMaskingKey", bytes(public_key))
        return self._transact(participant, "register masking key", fn)

    def reveal_pair_seeds(self, participant: Signer, round_id: int, seeds: Mapping[str, bytes]) -> TxResult:
        """Reveal ``participant``'s pair seeds with the members ``seeds`` names, for the closed ``round_id``."""
        others = sorted((_checksum(self, a) for a in seeds), key=lambda a: int(a, 16))
        by_key = {int(a, 16): bytes(v) for a, v in seeds.items()}
        fn = self._functions.encode("revealPairSeeds", int(round_id), others, [by_key[int(a, 16)] for a in others])
        return self._transact(participant, f"reveal {len(others)} pair seeds for round {round_id}", fn)

    def reveal_shares(self, participant: Signer, round_id: int, shares: Mapping[Address, bytes]) -> TxResult:
        """Reveal ``participant``'s 32-byte shares of the self seeds of the owners ``shares`` names (closed ``round_id``)."""
        owners = sorted((_checksum(self, a) for a in shares), key=lambda a: int(a, 16))
        by_key = {int(a, 16): bytes(v) for a, v in shares.items()}
        fn = self._functions.encode("revealShares", int(round_id), owners, [by_key[int(a, 16)] for a in owners])
        return self._transact(participant, f"reveal {len(owners)} shares for round {round_id}", fn)

    def masking_key(self, participant: str) -> bytes | None:
        """``participant``'s current masking public key, or ``None``."""
        (value,) = self._read("getMaskingKey", _checksum(self, participant))
        value = bytes(value)
        return value if any(value) else None

    def block_timestamp(self, number: int) -> int:
        """The timestamp of block ``number`` (remembered: blocks do not change)."""
        if number not in self._timestamps:
            self._timestamps[number] = int(self.chain.w3.eth.get_block(int(number))["timestamp"])
        return self._timestamps[number]

    def roster(self, round_id: int, opened_block: int) -> dict[Address, bytes]:
        """A private round's roster: every participant registered, with a masking key, when the round opened.

        Replays the registry and key events from the deployment to the round's ``RoundOpened``
        (same block: by log index); each member's key is its last before the open.
        """
        opened = [
            log
            for log in self._logs(opened_block, opened_block, [self._events.topics["RoundOpened"]])
            if int(log.args["roundId"]) == int(round_id)
        ]
        if not opened:
            raise ChainError(
                f"ledger {self.address}: no RoundOpened event for round {round_id} in block {opened_block}"
            )
        limit = (opened_block, opened[0].log_index)
        topics = [self._events.topics[name] for name in _ROSTER_EVENTS]
        registered: dict[Address, bool] = {}
        keys: dict[Address, bytes] = {}
        start = self.info().deployed_block
        for page_start in range(start, opened_block + 1, LOG_PAGE_BLOCKS):
            page_end = min(opened_block, page_start + LOG_PAGE_BLOCKS - 1)
            for log in self._logs(page_start, page_end, topics):
                if (log.block_number, log.log_index) >= limit:
                    break
                who = Address(log.args["participant"])
                if log.name == "ParticipantRegistered":
                    registered[who] = True
                elif log.name == "ParticipantRemoved":
                    registered[who] = False
                else:
                    keys[who] = bytes(log.args["publicKey"])
        members = sorted((a for a in keys if registered.get(a)), key=lambda a: int(a, 16))
        return {a: keys[a] for a in members}

    def reveals(self, round_id: int, state: RoundState | None = None) -> tuple[RevealRecord, ...]:
        """Every reveal of the private round ``round_id``, in chain order, with its block's timestamp."""
        state = state or self.round_state(round_id)
        if state.closed_block == 0:
            return ()
        end = state.end_block if state.status.ended else int(self.chain.w3.eth.block_number)
        topics = [self._events.topics[name] for name in _REVEAL_EVENTS]
        out: list[RevealRecord] = []
        for page_start in range(state.closed_block, end + 1, LOG_PAGE_BLOCKS):
            page_end = min(end, page_start + LOG_PAGE_BLOCKS - 1)
            for log in self._logs(page_start, page_end, topics, int(round_id).to_bytes(32, "big")):
                pairs: dict[Address, bytes] = {}
                shares: dict[Address, bytes] = {}
                if log.name == "PairSeedsRevealed":
                    for a, v in zip(log.args["others"], log.args["seeds"], strict=True):
                        pairs.setdefault(Address(a), bytes(v))
                else:
                    for a, v in zip(log.args["owners"], log.args["shares"], strict=True):
                        shares.setdefault(Address(a), bytes(v))
                out.append(
                    RevealRecord(
                        round_id=RoundId(int(round_id)),
                        participant=Address(log.args["participant"]),
                        pair_seeds=pairs,
                        shares=shares,
                        block_number=log.block_number,
                        log_index=log.log_index,
                        timestamp=self.block_timestamp(log.block_number),
                        tx_hash=log.tx_hash,
                    )
                )
        return tuple(out)

    # ------------------------------------------------------------------ reads

    def info(self) -> LedgerInfo:
        """Deploy-time facts (cached: they never change)."""
        if self._info is None:
            self._info = LedgerInfo(
                address=self.address,
                coordinator=Address(self._read("coordinator")[0]),
                genesis_hash=Digest(bytes(self._read("genesisModelHash")[0])),
                manifest_hash=Digest(bytes(self._read("manifestHash")[0])),
                deployed_block=int(self._read("deployedBlock")[0]),
            )
        return self._info

    def genesis_cid(self) -> Cid:
        """The genesis model's CID, from the ``LedgerCreated`` event of the deployment block."""
        return Cid(self._creation().args["genesisModelCid"])

    def manifest_cid(self) -> Cid:
        """The federation manifest's CID, from the ``LedgerCreated`` event of the deployment block."""
        return Cid(self._creation().args["manifestCid"])

    def _creation(self) -> _Log:
        if self._created is None:
            block = self.info().deployed_block
            logs = self._logs(block, block, [self._events.topics["LedgerCreated"]])
            if not logs:
                raise ChainError(f"ledger {self.address}: no LedgerCreated event in block {block}")
            self._created = logs[0]
        return self._created

    def head(self) -> tuple[int, bytes]:
        """The chain's latest block: its number and hash (to pin what a reader saw)."""
        block = self.chain.w3.eth.get_block("latest")
        return int(block["number"]), bytes(HexBytes(block["hash"]))

    def next_round(self) -> RoundId:
        """The next round to open: the number of rounds opened so far."""
        return RoundId(int(self._read("nextRound")[0]))

    def last_aggregate(self) -> Digest:
        """The last finalized aggregate, or the genesis model before any round was finalized."""
        return Digest(bytes(self._read("lastAggregate")[0]))

    def next_base(self) -> Digest:
        """The model the next round must build on (:meth:`last_aggregate`)."""
        return self.last_aggregate()

    def round_state(self, round_id: int) -> RoundState:
        """Round ``round_id`` as storage holds it."""
        (raw,) = self._read("getRound", int(round_id))
        deadline, min_updates, included, status, opened, closed, ended = raw
        return RoundState(
            round_id=RoundId(int(round_id)),
            status=RoundStatus(int(status)),
            deadline=int(deadline),
            min_updates=int(min_updates),
            included_count=int(included),
            opened_block=int(opened),
            closed_block=int(closed),
            end_block=int(ended),
        )

    def update_hash(self, round_id: int, participant: str) -> Digest | None:
        """The digest ``participant`` recorded for ``round_id``, or ``None``."""
        (value,) = self._read("getUpdate", int(round_id), _checksum(self, participant))
        value = bytes(value)
        return Digest(value) if any(value) else None

    def participant(self, address: str) -> ParticipantInfo:
        """The registry entry of ``address``."""
        checksummed = _checksum(self, address)
        registered, cap = self._read("getParticipant", checksummed)
        return ParticipantInfo(address=Address(checksummed), registered=bool(registered), max_samples=int(cap))

    def participants(self) -> tuple[ParticipantInfo, ...]:
        """Every address ever registered, in registration order, with its current entry."""
        return tuple(self.participant(a) for a in self.participant_addresses())

    def participant_addresses(self) -> tuple[Address, ...]:
        """Every address ever registered, in registration order (one call, no entries)."""
        return tuple(Address(a) for a in self._read("participants")[0])

    # ------------------------------------------------------------------ history

    def round_history(self, round_id: int, state: RoundState | None = None) -> RoundHistory:
        """Everything recorded about ``round_id``, reading only that round's blocks."""
        state = state or self.round_state(round_id)
        if state.status is RoundStatus.NOT_OPENED:
            raise ChainError(f"round {round_id} has not been opened on ledger {self.address}")
        start = state.opened_block
        if state.status.ended:
            end = state.end_block
        elif state.status is RoundStatus.CLOSED:
            end = state.closed_block  # nothing but its end is emitted for a round after its close
        else:
            end = int(self.chain.w3.eth.block_number)
        topic_round = int(round_id).to_bytes(32, "big")
        logs: list[_Log] = []
        for page_start in range(start, end + 1, LOG_PAGE_BLOCKS):
            page_end = min(end, page_start + LOG_PAGE_BLOCKS - 1)
            logs += self._logs(page_start, page_end, self._round_topics(), topic_round)
        return self._assemble(round_id, state, logs)

    def round_opened(self, round_id: int, state: RoundState | None = None) -> RoundOpened:
        """The ``RoundOpened`` record of ``round_id`` (what it builds on), read from the block it was opened in.

        ``state`` is the round's state if the caller has just read it (it saves reading it again).
        """
        state = state or self.round_state(round_id)
        if state.status is RoundStatus.NOT_OPENED:
            raise ChainError(f"round {round_id} has not been opened on ledger {self.address}")
        block = state.opened_block
        logs = self._logs(block, block, [self._events.topics["RoundOpened"]], int(round_id).to_bytes(32, "big"))
        return self._assemble(round_id, state, logs).opened

    def history(self, start: int = 0, stop: int | None = None) -> Iterator[RoundHistory]:
        """Every opened round from ``start`` (to ``stop``, exclusive), oldest first.

        Each round is what :meth:`round_history` returns for it, read with far fewer
        calls: the ledger's round events are read in windows of
        :data:`HISTORY_WINDOW_BLOCKS` blocks from the block where round ``start`` was
        opened (from the deployment, for round 0), and a round is yielded once its
        ``RoundFinalized`` or ``RoundAbandoned`` event has been read. Its :class:`RoundState`
        is then built from its events rather than read from storage: ``openRound`` stores the
        deadline and quorum it emits in ``RoundOpened`` and the number of its block,
        ``closeRound`` the number of its block, ``finalizeRound`` the length of the
        ``included`` list it emits and ``finalizeRound``/``abandonRound`` the number of their
        block, and nothing changes a round once it ended, so for an ended round the two agree
        field for field. A round not ended by the time the windows reach the chain's head
        (the round in progress) is read by :meth:`round_history`.

        One round (``stop == start + 1``, what a participant verifies before each round) is
        read as :meth:`round_history` reads it: its state, then its own blocks' events.
        """
        if stop is not None and stop == start + 1:
            state = self.round_state(start)
            if state.status is not RoundStatus.NOT_OPENED:
                yield self.round_history(start, state)
            return
        end = self.next_round() if stop is None else min(stop, self.next_round())
        if start >= end:
            return
        head = int(self.chain.w3.eth.block_number)
        # no round opens before the ledger exists: from there, round 0 needs no lookup
        block = self.info().deployed_block if start == 0 else self.round_state(start).opened_block
        pending: dict[int, list[_Log]] = {}
        r = start
        while r < end and block <= head:
            window_end = min(head, block + HISTORY_WINDOW_BLOCKS - 1)
            for log in self._logs(block, window_end, self._round_topics()):
                round_id = int(log.args["roundId"])
                if r <= round_id < end:
                    pending.setdefault(round_id, []).append(log)
            block = window_end + 1
            while r < end and any(log.name in _END_EVENTS for log in pending.get(r, ())):
                yield self._history_from_logs(r, pending.pop(r))
                r += 1
            if r < end and r not in pending and block <= head:
                # nothing of round r yet: skip the blocks before it opened (a quiet stretch)
                block = max(block, self.round_state(r).opened_block)
        for round_id in range(r, end):
            yield self.round_history(round_id)

    def _history_from_logs(self, round_id: int, logs: list[_Log]) -> RoundHistory:
        opened = next((log for log in logs if log.name == "RoundOpened"), None)
        ended = next(log for log in logs if log.name in _END_EVENTS)
        closed = next((log for log in logs if log.name == "RoundClosed"), None)
        if opened is None:
            raise ChainError(
                f"ledger {self.address}: round {round_id} ended in block {ended.block_number} "
                "but no RoundOpened event was read"
            )
        finalized = ended.name == "RoundFinalized"
        state = RoundState(
            round_id=RoundId(int(round_id)),
            status=RoundStatus.FINALIZED if finalized else RoundStatus.ABANDONED,
            deadline=int(opened.args["deadline"]),
            min_updates=int(opened.args["minUpdates"]),
            included_count=len(ended.args["included"]) if finalized else 0,
            opened_block=opened.block_number,
            closed_block=closed.block_number if closed is not None else 0,
            end_block=ended.block_number,
        )
        return self._assemble(round_id, state, logs)

    def _assemble(self, round_id: int, state: RoundState, logs: list[_Log]) -> RoundHistory:
        opened: RoundOpened | None = None
        updates: list[UpdateRecord] = []
        aggregate: AggregateRecord | None = None
        closed: RoundClosedRecord | None = None
        abandoned: RoundAbandonedRecord | None = None
        for log in sorted(logs, key=lambda log: (log.block_number, log.log_index)):
            args, block, tx_hash = log.args, log.block_number, log.tx_hash
            if log.name == "RoundOpened":
                opened = RoundOpened(
                    round_id=RoundId(int(args["roundId"])),
                    base_hash=Digest(bytes(args["baseModelHash"])),
                    base_cid=Cid(args["baseModelCid"]),
                    deadline=int(args["deadline"]),
                    min_updates=int(args["minUpdates"]),
                    block_number=block,
                    tx_hash=tx_hash,
                )
            elif log.name == "UpdateSubmitted":
                updates.append(
                    UpdateRecord(
                        round_id=RoundId(int(args["roundId"])),
                        participant=Address(args["participant"]),
                        update_hash=Digest(bytes(args["updateHash"])),
                        cid=Cid(args["cid"]),
                        num_samples=int(args["numSamples"]),
                        block_number=block,
                        tx_hash=tx_hash,
                    )
                )
            elif log.name == "RoundClosed":
                closed = RoundClosedRecord(round_id=RoundId(int(args["roundId"])), block_number=block, tx_hash=tx_hash)
            elif log.name == "RoundFinalized":
                aggregate = AggregateRecord(
                    round_id=RoundId(int(args["roundId"])),
                    aggregate_hash=Digest(bytes(args["aggregateHash"])),
                    cid=Cid(args["aggregateCid"]),
                    included=tuple(Address(a) for a in args["included"]),
                    block_number=block,
                    tx_hash=tx_hash,
                )
            elif log.name == "RoundAbandoned":
                abandoned = RoundAbandonedRecord(
                    round_id=RoundId(int(args["roundId"])), block_number=block, tx_hash=tx_hash
                )
        if opened is None:
            raise ChainError(
                f"ledger {self.address}: no RoundOpened event for round {round_id} in block {state.opened_block}"
            )
        updates.sort(key=lambda u: int(u.participant, 16))
        return RoundHistory(
            state=state,
            opened=opened,
            updates=tuple(updates),
            aggregate=aggregate,
            closed=closed,
            abandoned=abandoned,
        )

    def _round_topics(self) -> list[bytes]:
        return [self._events.topics[name] for name in _ROUND_EVENTS]

    def _logs(self, start: int, end: int, events: list[bytes], round_topic: bytes | None = None) -> list[_Log]:
        """The ledger's logs of ``events`` (topic 0) in blocks ``start..end``, decoded, in chain order."""
        topics: list[Any] = [[HexBytes(t).to_0x_hex() for t in events]]
        if round_topic is not None:
            topics.append(HexBytes(round_topic).to_0x_hex())
        raw_logs = self.chain.get_logs({"address": self.address, "fromBlock": start, "toBlock": end, "topics": topics})
        logs = [self._events.decode(raw) for raw in raw_logs]
        logs.sort(key=lambda log: (log.block_number, log.log_index))
        return logs

    # ------------------------------------------------------------------ sending

    def _read(self, name: str, *args: Any) -> tuple[Any, ...]:
        """What the view function ``name(*args)`` returns on the latest block."""
        return self._functions.decode(name, self.chain.call(self.address, self._functions.encode(name, *args)))

    def _transact(self, signer: Signer, action: str, fn: Any) -> TxResult:
        """Send ``fn``: call data (0x hex), or a web3 contract function (tests build odd calls that way)."""
        data = fn if isinstance(fn, str) else fn._encode_transaction_data()
        result, _ = _send(self.chain, signer, action, self.address, data, self._decoder)
        return result


def _cs(address: str) -> ChecksumAddress:
    """``address`` (already EIP-55) typed as web3 wants it."""
    return cast(ChecksumAddress, address)


def _checksum(ledger: Ledger, address: str) -> str:
    try:
        return str(ledger.chain.w3.to_checksum_address(address))
    except ValueError as err:
        raise ChainError(f"not an Ethereum address: {address!r}") from err


def _send(
    chain: Chain,
    signer: Signer,
    action: str,
    to: str | None,
    data: Any,
    decoder: RevertDecoder,
) -> tuple[TxResult, Any]:
    """Simulate, sign, send and wait for one transaction; decode any revert."""
    w3 = chain.w3
    call: dict[str, Any] = {"from": signer.address, "data": data}
    if to is not None:
        call["to"] = to
    chain.prepare()
    try:
        estimate = int(w3.eth.estimate_gas(call, chain.estimate_block))  # type: ignore[arg-type]
    except ChainConnectionError:
        raise  # already names the node; nothing was sent
    except Exception as err:
        decoded = decoder.from_exception(err)
        if decoded is not None:
            raise decoded from None
        raise TransactionError(action, _reason(err)) from err

    chain_id = chain.chain_id
    base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
    # Reserved last, just before the send: a failure between reserving and sending would
    # leave a gap in the actor's nonces, and every later transaction would wait behind it.
    nonce = signer.reserve_nonce(chain_id, lambda: w3.eth.get_transaction_count(_cs(signer.address), "pending"))
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "data": data,
        "gas": estimate * _GAS_MARGIN_NUM // _GAS_MARGIN_DEN,
        "maxFeePerGas": 2 * base_fee + _PRIORITY_FEE,
        "maxPriorityFeePerGas": _PRIORITY_FEE,
        "value": 0,
    }
    if to is not None:
        tx["to"] = to
    raw = signer.sign(tx)
    started = time.perf_counter()
    try:
        tx_hash = chain.send_raw_transaction(raw)
    except (ContractRevertError, ChainConnectionError):
        signer.forget_nonce(chain_id)
        raise
    except Exception as err:
        # The nonce may or may not have been consumed; ask the chain next time.
        signer.forget_nonce(chain_id)
        decoded = decoder.from_exception(err)
        if decoded is not None:
            raise decoded from None
        raise TransactionError(action, _reason(err)) from err
    try:
        receipt = chain.wait_for_receipt(tx_hash)
    except ChainError:
        # Sent, fate unknown (the node went away, or dropped it): ask the chain next time.
        signer.forget_nonce(chain_id)
        raise
    if int(receipt["status"]) != 1:
        # Mined but reverted: the state or the clock moved between simulation and inclusion.
        # Not the block's end state (it holds what was mined after the transaction in the same
        # block: a close turned DeadlinePassed into RoundNotOpen) but the transaction as it ran,
        # on the state before it with its block's clock (Chain.revert_data).
        data = chain.revert_data(tx_hash, call, int(receipt["blockNumber"]))
        decoded = decoder.decode(data) if data is not None else None
        if decoded is not None:
            raise decoded
        raise TransactionError(action, "reverted", tx_hash.to_0x_hex())
    result = TxResult(
        action=action,
        tx_hash=tx_hash.to_0x_hex(),
        block_number=int(receipt["blockNumber"]),
        gas_used=Gas(int(receipt["gasUsed"])),
    )
    logger.info(
        "%s: %s by %s, gas %d, %.0f ms",
        action,
        result.tx_hash,
        signer.name,
        result.gas_used,
        1000 * (time.perf_counter() - started),
    )
    return result, receipt


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) < 300 else text[:300] + "..."


__all__ = ["HISTORY_WINDOW_BLOCKS", "LOG_PAGE_BLOCKS", "Ledger", "RevealRecord", "code_mismatch", "create_address"]
