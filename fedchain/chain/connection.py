"""Connections to a chain: the embedded eth-tester chain or any JSON-RPC node.

Both kinds offer the same small surface (:class:`Chain`): a ``web3`` handle, raw transaction
submission, receipts, the chain's clock, and, on development chains, funding and time travel.
Everything above this module signs transactions locally (:mod:`fedchain.chain.accounts`) and
sends raw bytes, so the same code runs against eth-tester, anvil, geth or a testnet.

Persistence of the embedded chain
---------------------------------
eth-tester keeps its state in memory. To let a demo be audited later from a fresh process
with no node running, :class:`EmbeddedChain` keeps a *journal* in the working directory: one
JSON line per mined transaction holding the raw signed transaction and the timestamp of the
block it was mined in (and one per time-travel block, in tests), after a first line fixing
the genesis timestamp. Opening a journal
replays it into a fresh eth-tester chain, one transaction per block exactly as eth-tester
mines them, checking that every replayed transaction gets the recorded hash and status. The
resulting state (storage, events, block numbers, timestamps) is the same as the original;
only block hashes differ, because eth-tester draws a random ``prevrandao`` per block, and
nothing in fedchain depends on them. A journal is append-only, each line flushed and
fsync'ed before the transaction's receipt is returned, so a crash loses no mined transaction.
A tampered journal does not replay (a changed transaction changes its hash or fails).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests
from eth_account import Account
from hexbytes import HexBytes
from urllib3.exceptions import NewConnectionError
from web3 import HTTPProvider, Web3
from web3.datastructures import AttributeDict
from web3.exceptions import TransactionNotFound, Web3RPCError
from web3.types import RPCEndpoint, RPCResponse, TxReceipt

from fedchain.errors import ChainConnectionError, ChainError, TransactionError

logger = logging.getLogger(__name__)

_JOURNAL_FORMAT = 1
#: Longest pause between two asks for a transaction's receipt.
RECEIPT_POLL_SECONDS = 0.05
_FIRST_RECEIPT_POLL_SECONDS = 0.001
#: Ether given to each actor on a development chain (plenty for thousands of transactions).
DEV_FUNDING_WEI = 100 * 10**18


class Chain(ABC):
    """A connection to one Ethereum chain.

    Attributes
    ----------
    w3:
        The web3 handle; reads go through it directly.
    endpoint:
        A printable name of the node (``embedded`` or its URL).
    """

    w3: Web3
    endpoint: str
    #: The block a transaction is estimated (simulated) on before it is sent: the one it would go
    #: into. (web3 fills in "latest" when none is given, and on anvil and hardhat the latest
    #: block's timestamp is the last mined one's, so a finalize just past a deadline was
    #: simulated before it.)
    estimate_block: str = "latest"

    @property
    def chain_id(self) -> int:
        """The chain id transactions are signed for."""
        return int(self.w3.eth.chain_id)

    @abstractmethod
    def now(self) -> int:
        """The timestamp the next block would get, as near as this connection can tell."""

    def prepare(self) -> None:
        """Bring the pending block up to date before a call, an estimate or a send."""

    def get_logs(self, params: dict[str, Any]) -> list[Any]:
        """``eth_getLogs`` for ``params`` (address, fromBlock, toBlock, topics)."""
        return list(self.w3.eth.get_logs(params))  # type: ignore[arg-type]

    def call(self, to: str, data: str) -> bytes:
        """``eth_call`` of the call data ``data`` (0x hex) at ``to`` on the latest block; the bytes returned.

        One plain JSON-RPC request through the web3 handle's middleware: the caller encodes and
        decodes (web3's contract and method formatting would double the cost of a read).
        """
        params: list[Any] = [{"to": to, "data": data}, "latest"]
        return bytes(HexBytes(self.w3.manager.request_blocking(RPCEndpoint("eth_call"), params)))

    @abstractmethod
    def send_raw_transaction(self, raw: bytes) -> HexBytes:
        """Submit a signed transaction; return its hash. Idempotent for the same bytes."""

    def wait_for_receipt(self, tx_hash: HexBytes, timeout: float = 120.0) -> TxReceipt:
        """Wait for ``tx_hash`` to be mined and return its receipt.

        The receipt is asked for at once, then after 1 ms, 2 ms, 4 ms... and every
        :data:`RECEIPT_POLL_SECONDS` from there: a development node mines a transaction within
        a millisecond or two of its arrival, and a fixed 50 ms first pause cost more than the
        transaction itself; a real chain's blocks come seconds apart, so the first few quick
        asks add a handful of requests per transaction.

        Raises
        ------
        TransactionError
            If no receipt came within ``timeout`` seconds, or the node could not be asked (the
            cause is chained).
        """
        deadline = time.monotonic() + timeout
        delay = _FIRST_RECEIPT_POLL_SECONDS
        while True:
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                pass
            except Exception as err:  # a connection error, or the node's refusal
                raise TransactionError("waiting for receipt", str(err), tx_hash.to_0x_hex()) from err
            left = deadline - time.monotonic()
            if left <= 0:
                late = TimeoutError(f"transaction {tx_hash.to_0x_hex()} not mined after {timeout:g} seconds")
                raise TransactionError("waiting for receipt", str(late), tx_hash.to_0x_hex()) from late
            time.sleep(min(delay, left))
            delay = min(2 * delay, RECEIPT_POLL_SECONDS)

    def revert_data(self, tx_hash: HexBytes, call: dict[str, Any], block_number: int) -> bytes | None:
        """The revert payload of ``tx_hash``, mined in ``block_number`` with status 0.

        The answer must be what the contract saw *when the transaction ran*: the state before
        it (not the block's end state, which holds the transactions mined after it in the same
        block, e.g. a ``closeRound`` that would turn ``DeadlinePassed`` into ``RoundNotOpen``)
        and the block's own number and timestamp. In order of exactness:

        1. ``debug_traceTransaction`` with the call tracer: the transaction itself, re-executed
           by the node in place (anvil, hardhat, geth with the debug API);
        2. ``eth_call`` of ``call`` on the parent block's state with the block's number and
           time as block overrides (geth, anvil): exact unless an earlier transaction of the
           same block changed the state it depends on;
        3. ``eth_call`` of ``call`` on the block's end state (a node offering neither).

        Parameters
        ----------
        tx_hash:
            The reverted transaction.
        call:
            Its ``from``, ``to`` and ``data``, for the fallbacks.
        block_number:
            The block it was mined in.

        Returns
        -------
        bytes or None
            The revert data, or ``None`` if none could be recovered.
        """
        from fedchain.chain._revert import revert_data  # the chain layer's own helper

        trace = self._request("debug_traceTransaction", [tx_hash.to_0x_hex(), {"tracer": "callTracer"}])
        if isinstance(trace, dict) and trace.get("result") is not None:
            output = trace["result"].get("output") if isinstance(trace["result"], dict) else None
            if isinstance(output, str) and len(output) >= 10:
                return bytes(HexBytes(output))
        block = self.w3.eth.get_block(block_number)
        overrides = {"number": hex(block_number), "time": hex(int(block["timestamp"]))}
        call_json = {k: (v if isinstance(v, str) else HexBytes(v).to_0x_hex()) for k, v in call.items()}
        answer = self._request("eth_call", [call_json, hex(block_number - 1), {}, overrides])
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            data = revert_data(_RpcErrorAnswer(answer["error"]))
            if data is not None:
                return data
        try:
            self.w3.eth.call(call, block_number)  # type: ignore[arg-type]
        except Exception as err:  # noqa: BLE001 - any way a node reports a revert; dug into below
            return revert_data(err)
        return None

    def _request(self, method: str, params: list[Any]) -> Any:
        """One raw JSON-RPC request; the response dict, or ``None`` if the provider raised."""
        try:
            return self.w3.provider.make_request(RPCEndpoint(method), params)
        except ChainConnectionError:
            raise
        except Exception as err:  # noqa: BLE001 - an optional method: any refusal means "not here"
            logger.debug("%s on %s: %s", method, self.endpoint, _describe(err))
            return None

    @abstractmethod
    def fund(self, address: str, wei: int = DEV_FUNDING_WEI) -> None:
        """Give ``address`` ether on a development chain (refused on other chains)."""

    def has_pending(self, address: str) -> bool:
        """Whether ``address`` has a transaction the node holds but has not mined yet."""
        account = self.w3.to_checksum_address(address)
        pending = int(self.w3.eth.get_transaction_count(account, "pending"))
        return pending > int(self.w3.eth.get_transaction_count(account, "latest"))

    @abstractmethod
    def advance_time(self, seconds: int) -> None:
        """Move the chain's clock forward by ``seconds`` (development chains only)."""

    def close(self) -> None:
        """Release what the connection holds."""


#: web3's default middleware that serves features fedchain does not use: ENS names in
#: parameters, chain-id validation of node-signed transactions (fedchain signs locally, with
#: the chain id it read, and sends raw), gas price and gas limit filling for
#: ``eth_sendTransaction`` (never sent). "validation" alone asks the node for its chain id on
#: every call and estimate; without these a contract read costs ~1.7 ms instead of ~5 ms on anvil.
_UNUSED_MIDDLEWARE = ("validation", "ens_name_to_address", "gas_price_strategy", "gas_estimate")


class _RpcErrorAnswer(Exception):
    """A JSON-RPC error object, shaped as an exception for :func:`fedchain.chain._revert.revert_data`."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error)
        self.data = error.get("data")


def _lean(w3: Web3) -> Web3:
    """``w3`` without :data:`_UNUSED_MIDDLEWARE` (attribute-dict results are kept)."""
    for name in _UNUSED_MIDDLEWARE:
        with contextlib.suppress(ValueError):
            w3.middleware_onion.remove(name)
    return w3


# --------------------------------------------------------------------------- embedded


class EmbeddedChain(Chain):
    """The in-process eth-tester chain, optionally persisted as a journal.

    Parameters
    ----------
    journal:
        Path of the journal file. If it exists it is replayed; new transactions are appended.
        ``None`` keeps the chain in memory only.
    read_only:
        Replay the journal but refuse to send transactions (what an auditor wants).
    """

    endpoint = "embedded"

    def __init__(self, journal: Path | None = None, *, read_only: bool = False) -> None:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider

        self._journal_path = journal
        self._read_only = read_only
        self._lock = threading.RLock()
        self._clock_offset = 0
        self._snapshot_offsets: dict[int, int] = {}
        self._logs_by_block: dict[bytes, list[AttributeDict[str, Any]]] = {}  # block hash -> its logs
        entries = _read_journal(journal) if journal is not None and journal.exists() else []
        if entries:
            genesis_ts = int(entries[0]["timestamp"])
        else:
            if read_only:
                raise ChainError(f"no chain journal at {journal}")
            genesis_ts = int(time.time())
        params = PyEVMBackend.generate_genesis_params(overrides={"timestamp": genesis_ts})
        self._backend = PyEVMBackend(genesis_parameters=params)
        _measure_gas_estimates(self._backend.chain)
        self._tester = EthereumTester(self._backend)
        self.w3 = _lean(Web3(EthereumTesterProvider(self._tester)))
        self._faucet = Account.from_key(self._backend.account_keys[0].to_bytes())
        # A call without "from" is given eth-tester's first account, the faucet, which web3's
        # tester middleware looks up (listing every test account, thrice) for each call;
        # naming it once here cuts the cost of a read from ~9 ms to ~3 ms.
        self.w3.eth.default_account = self._faucet.address
        self._journal_file: Any = None
        if entries:
            self._replay(entries[1:])
        if journal is not None and not read_only:
            journal.parent.mkdir(parents=True, exist_ok=True)
            self._journal_file = open(journal, "a", encoding="utf-8")  # noqa: SIM115 - held open
            if not entries:
                self._append({"kind": "genesis", "format": _JOURNAL_FORMAT, "timestamp": genesis_ts})

    @property
    def journal(self) -> Path | None:
        """The journal file, if the chain is persisted."""
        return self._journal_path

    def now(self) -> int:
        return max(int(time.time()) + self._clock_offset, self._latest_timestamp() + 1)

    def prepare(self) -> None:
        with self._lock:
            self._set_pending_timestamp(self.now())

    def call(self, to: str, data: str) -> bytes:
        # from the faucet, as web3 fills it in (see __init__): eth-tester needs a sender
        params: list[Any] = [{"from": self._faucet.address, "to": to, "data": data}, "latest"]
        return bytes(HexBytes(self.w3.manager.request_blocking(RPCEndpoint("eth_call"), params)))

    def send_raw_transaction(self, raw: bytes) -> HexBytes:
        if self._read_only:
            raise ChainError("this embedded chain was opened read-only (for auditing)")
        with self._lock:
            ts = self.now()
            self._set_pending_timestamp(ts)
            tx_hash = HexBytes(self._tester.send_raw_transaction(HexBytes(raw).to_0x_hex()))
            receipt = self.w3.eth.get_transaction_receipt(tx_hash)
            self._index_logs(receipt)
            block = self.w3.eth.get_block(receipt["blockNumber"])
            self._append(
                {
                    "kind": "tx",
                    "timestamp": int(block["timestamp"]),
                    "raw": HexBytes(raw).to_0x_hex(),
                    "hash": tx_hash.to_0x_hex(),
                    "status": int(receipt["status"]),
                }
            )
            return tx_hash

    def revert_data(self, tx_hash: HexBytes, call: dict[str, Any], block_number: int) -> bytes | None:
        """Re-execute the mined transaction ``tx_hash`` itself with py-evm, as it ran.

        On the state its block started from (its parent's) with its block's own header (number,
        timestamp): eth-tester mines one transaction per block, so that is exactly the state the
        transaction saw. (eth-tester's ``eth_call`` would run on the block's end state and
        reports the revert payload only as text.)
        """
        del call  # the transaction itself is replayed
        evm = self._backend.chain
        with self._lock:
            try:
                tx = evm.get_canonical_transaction(bytes(tx_hash))
                header = evm.get_canonical_block_header_by_number(block_number)
                parent = evm.get_canonical_block_header_by_number(block_number - 1)
            except Exception as err:  # noqa: BLE001 - py-evm's lookup errors: nothing to replay
                logger.debug("cannot replay %s: %s", tx_hash.to_0x_hex(), err)
                return None
            vm = evm.get_vm(at_header=header.copy(state_root=parent.state_root))
            state = vm.state
            snapshot = state.snapshot()
            try:
                computation = state.apply_transaction(tx)
            finally:
                state.revert(snapshot)
        if not computation.is_error:
            return None
        output = bytes(computation.output)
        return output if len(output) >= 4 else None

    def fund(self, address: str, wei: int = DEV_FUNDING_WEI) -> None:
        with self._lock:
            self.prepare()
            nonce = self.w3.eth.get_transaction_count(self._faucet.address, "pending")
            base_fee = int(self.w3.eth.get_block("latest")["baseFeePerGas"])
            tx = {
                "type": 2,
                "chainId": self.chain_id,
                "nonce": nonce,
                "to": Web3.to_checksum_address(address),
                "value": wei,
                "gas": 21_000,
                "maxFeePerGas": 2 * base_fee + 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
            signed = self._faucet.sign_transaction(tx)
            self.wait_for_receipt(self.send_raw_transaction(signed.raw_transaction))

    def advance_time(self, seconds: int) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._clock_offset += seconds
            # Mine an empty block at the new time, as eth-tester's time_travel does, so that
            # simulations (which run on a child of the latest block) see the new clock too.
            ts = self.now()
            self._tester.time_travel(ts)
            self._append({"kind": "time", "timestamp": ts})

    def snapshot(self) -> int:
        """Remember the chain's current state (and clock offset); return an id for :meth:`revert`.

        For in-memory chains only: a journal is append-only, so a chain with one refuses.

        Raises
        ------
        ChainError
            If the chain is persisted in a journal.
        """
        self._refuse_snapshots_with_journal()
        with self._lock:
            snapshot_id = int(self._tester.take_snapshot())
            self._snapshot_offsets[snapshot_id] = self._clock_offset
            return snapshot_id

    def revert(self, snapshot: int) -> None:
        """Return to the state of :meth:`snapshot` ``snapshot``; it may be reverted to again.

        Blocks mined since are dropped, so nonces go back too: every
        :class:`~fedchain.chain.accounts.Signer` used since must ``forget_nonce``.

        Raises
        ------
        ChainError
            If the chain is persisted in a journal, or ``snapshot`` is not one of its snapshots.
        """
        self._refuse_snapshots_with_journal()
        with self._lock:
            if snapshot not in self._snapshot_offsets:
                raise ChainError(f"no snapshot {snapshot} of this embedded chain")
            self._tester.revert_to_snapshot(snapshot)
            self._clock_offset = self._snapshot_offsets[snapshot]

    def close(self) -> None:
        if self._journal_file is not None:
            self._journal_file.close()
            self._journal_file = None

    def get_logs(self, params: dict[str, Any]) -> list[Any]:
        """The logs ``eth_getLogs`` would return, read from the receipts of the range's blocks.

        eth-tester answers ``eth_getLogs`` by scanning from ``fromBlock`` to the chain's head
        whatever ``toBlock`` says (and its receipt lookup by hash scans back from the head), so
        reading an old round that way costs time proportional to the whole history and an audit
        becomes quadratic. Reading the receipts of exactly the requested blocks from the py-evm
        chain under it keeps a narrow query narrow.
        """
        evm = self._backend.chain
        start, end = int(params["fromBlock"]), int(params["toBlock"])
        # the logs hold checksummed addresses (see _log_entry): compare in that form
        address = Web3.to_checksum_address(params["address"]) if params.get("address") else None
        wanted = [_topic_set(t) for t in params.get("topics", [])]
        out: list[Any] = []
        with self._lock:
            head = int(evm.get_canonical_head().block_number)
            for number in range(start, min(end, head) + 1):
                # Keyed by block hash, so a block reverted away (snapshots) is never served.
                block_hash = bytes(evm.chaindb.get_canonical_block_hash(number))
                logs = self._logs_by_block.get(block_hash)
                if logs is None:
                    logs = self._logs_by_block[block_hash] = self._read_block_logs(number)
                for log in logs:
                    if address is not None and log["address"] != address:
                        continue
                    topics = log["topics"]
                    if len(topics) < len(wanted) or any(
                        w is not None and bytes(topics[i]) not in w for i, w in enumerate(wanted)
                    ):
                        continue
                    out.append(log)
        return out

    def _read_block_logs(self, number: int) -> list[AttributeDict[str, Any]]:
        """Every log of canonical block ``number``, decoded from py-evm's receipts."""
        evm = self._backend.chain
        block = evm.get_canonical_block_by_number(number)
        out = []
        log_index = 0
        for tx_index, (tx, receipt) in enumerate(zip(block.transactions, block.get_receipts(evm.chaindb), strict=True)):
            for log in receipt.logs:
                out.append(
                    _log_entry(
                        log.address,
                        [t.to_bytes(32, "big") for t in log.topics],
                        log.data,
                        number,
                        block.hash,
                        tx.hash,
                        tx_index,
                        log_index,
                    )
                )
                log_index += 1
        return out

    def _index_logs(self, receipt: Any) -> None:
        """Remember the logs of the block ``receipt``'s transaction was mined in.

        eth-tester mines one block per transaction, so those are the block's logs: indexed as
        the block is mined (as a node indexes receipts on import), a later ``get_logs`` of it
        decodes nothing.
        """
        evm = self._backend.chain
        number = int(receipt["blockNumber"])
        if len(evm.get_canonical_block_by_number(number).transactions) != 1:
            return  # not the one-transaction block expected: read it from py-evm when asked
        self._logs_by_block[bytes(HexBytes(receipt["blockHash"]))] = [
            _log_entry(
                HexBytes(log["address"]),
                [bytes(HexBytes(t)) for t in log["topics"]],
                HexBytes(log["data"]),
                number,
                HexBytes(receipt["blockHash"]),
                HexBytes(receipt["transactionHash"]),
                0,
                i,
            )
            for i, log in enumerate(receipt["logs"])
        ]

    # -- internals

    def _refuse_snapshots_with_journal(self) -> None:
        if self._journal_path is not None:
            raise ChainError(f"snapshots would make the chain diverge from its journal {self._journal_path}")

    def _latest_timestamp(self) -> int:
        return int(self._backend.chain.get_canonical_head().timestamp)

    def _set_pending_timestamp(self, ts: int) -> None:
        # eth-tester fixes a pending block's timestamp when the previous block is mined, so a
        # transaction sent minutes later would carry a stale time and deadlines would not bite.
        # Setting it just before each transaction keeps block time equal to wall time (+ any
        # time travel). This reaches into the backend's py-evm chain: eth-tester has no public
        # API for it (its time_travel mines an extra empty block).
        chain = self._backend.chain
        ts = max(ts, self._latest_timestamp() + 1)
        chain.header = chain.header.copy(timestamp=ts)

    def _append(self, entry: dict[str, Any]) -> None:
        if self._journal_file is None:
            return
        self._journal_file.write(json.dumps(entry, sort_keys=True) + "\n")
        self._journal_file.flush()
        os.fsync(self._journal_file.fileno())

    def _replay(self, entries: list[dict[str, Any]]) -> None:
        started = time.perf_counter()
        for n, entry in enumerate(entries, start=2):
            if entry.get("kind") == "time":
                self._tester.time_travel(int(entry["timestamp"]))
                continue
            if entry.get("kind") != "tx":
                raise ChainError(
                    f"chain journal {self._journal_path}, line {n}: unknown entry kind {entry.get('kind')!r}"
                )
            self._set_pending_timestamp(int(entry["timestamp"]))
            try:
                tx_hash = HexBytes(self._tester.send_raw_transaction(entry["raw"]))
            except Exception as err:  # eth-tester raises ValidationError and friends
                raise ChainError(
                    f"chain journal {self._journal_path}, line {n}: transaction does not replay: {err}"
                ) from err
            receipt = self.w3.eth.get_transaction_receipt(tx_hash)
            self._index_logs(receipt)
            if tx_hash != HexBytes(entry["hash"]) or int(receipt["status"]) != int(entry["status"]):
                raise ChainError(
                    f"chain journal {self._journal_path}, line {n}: replay gave transaction "
                    f"{tx_hash.to_0x_hex()} status {receipt['status']}, journal says {entry['hash']} "
                    f"status {entry['status']}"
                )
        logger.info(
            "replayed %d transactions from %s in %.2fs", len(entries), self._journal_path, time.perf_counter() - started
        )


def _measure_gas_estimates(chain: Any) -> None:
    """Give py-evm ``chain`` (and the chains eth-tester makes from it) :func:`_measured_gas_search`.

    Only when its estimator is py-evm's ``binary_gas_search`` (whose answer it reproduces).
    """
    from eth.estimators.gas import binary_gas_search

    estimator = chain.gas_estimator
    tolerance = getattr(estimator, "keywords", {}).get("tolerance")
    if getattr(estimator, "func", None) is not binary_gas_search.func or not isinstance(tolerance, int):
        return
    measured = _measured_gas_search(tolerance)
    type(chain).gas_estimator = staticmethod(measured)  # eth-tester's own class: a reverted chain is built from it
    chain.gas_estimator = measured


def _measured_gas_search(tolerance: int) -> Callable[[Any, Any], int]:
    """py-evm's ``binary_gas_search(tolerance)``, its answer found in three executions instead of a dozen.

    The search bisects the gas limits between the intrinsic gas and the block's limit, running
    the transaction at each midpoint, and answers the lowest midpoint that succeeded. It needs
    to know, at each midpoint, only whether the limit reaches the least one that succeeds. That
    least limit is measured instead: the transaction run once at the block's limit consumes
    ``needed`` gas before refunds; it succeeds at ``needed`` and runs out of gas at
    ``needed - 1`` (both checked), so the bisection is replayed on the numbers alone and gives
    the search's very answer (the same gas limit, hence the same signed bytes). A transaction
    that fails at the block's limit, or whose least limit is not what it consumed (gas-dependent
    code), is left to the search itself. eth-tester estimates every transaction this way: the
    search's dozen executions were most of an in-process transaction's cost.
    """
    from eth.estimators.gas import binary_gas_search
    from eth.vm.spoof import SpoofTransaction

    search = binary_gas_search(tolerance=tolerance)

    def run(state: Any, transaction: Any) -> Any:
        snapshot = state.snapshot()
        try:
            return state.apply_transaction(transaction)
        finally:
            state.revert(snapshot)

    def estimate(state: Any, transaction: Any) -> int:
        low, high = int(transaction.intrinsic_gas), int(state.gas_limit)
        at_limit = run(state, SpoofTransaction(transaction, gas=high, gas_price=0))
        needed = low + int(at_limit.get_gas_used())
        if (
            at_limit.is_error
            or not low < needed <= high
            or run(state, SpoofTransaction(transaction, gas=needed)).is_error
            or not run(state, SpoofTransaction(transaction, gas=needed - 1)).is_error
        ):
            return int(search(state, transaction))
        while high - low > tolerance:
            mid = (low + high) // 2
            if mid >= needed:
                high = mid
            else:
                low = mid
        return high

    return estimate


def _log_entry(
    address: bytes,
    topics: list[bytes],
    data: bytes,
    number: int,
    block_hash: bytes,
    tx_hash: bytes,
    tx_index: int,
    log_index: int,
) -> AttributeDict[str, Any]:
    """One log as ``eth_getLogs`` returns it through web3."""
    return AttributeDict(
        {
            "address": Web3.to_checksum_address(bytes(address)),
            "topics": [HexBytes(t) for t in topics],
            "data": HexBytes(data),
            "blockNumber": number,
            "blockHash": HexBytes(block_hash),
            "transactionHash": HexBytes(tx_hash),
            "transactionIndex": tx_index,
            "logIndex": log_index,
            "removed": False,
        }
    )


#: The quantities and byte strings of a JSON-RPC log (EIP-1474), converted as web3 converts them.
_LOG_QUANTITIES = ("blockNumber", "transactionIndex", "logIndex")
_LOG_BYTES = ("data", "blockHash", "transactionHash")


def _rpc_log(raw: Mapping[str, Any]) -> AttributeDict[str, Any]:
    """One log of a raw ``eth_getLogs`` answer as ``w3.eth.get_logs`` returns it (ints, HexBytes, EIP-55 address)."""
    log: dict[str, Any] = dict(raw)
    for key in _LOG_QUANTITIES:
        if isinstance(log.get(key), str):
            log[key] = int(log[key], 16)
    for key in _LOG_BYTES:
        if log.get(key) is not None:
            log[key] = HexBytes(log[key])
    log["topics"] = [HexBytes(t) for t in log.get("topics", ())]
    if log.get("address") is not None:
        log["address"] = _eip55(log["address"])
    return AttributeDict(log)


@functools.lru_cache(maxsize=256)
def _eip55(address: str) -> str:
    """EIP-55 form, remembered: every log of a ledger comes from the same few addresses."""
    return str(Web3.to_checksum_address(address))


def _topic_set(topic: Any) -> set[bytes] | None:
    """One position of an ``eth_getLogs`` topic filter: None (any), one topic, or alternatives."""
    if topic is None:
        return None
    if isinstance(topic, (list, tuple)):
        return {bytes(HexBytes(t)) for t in topic}
    return {bytes(HexBytes(topic))}


def _read_journal(path: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                # A torn last line: the transaction's receipt was never returned to its sender,
                # so it is as if it had not been sent (the sender retries).
                logger.warning("chain journal %s: ignoring incomplete last line %d", path, n)
                break
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ChainError(f"chain journal {path}, line {n}: not JSON: {err}") from err
    if entries and (entries[0].get("kind") != "genesis" or entries[0].get("format") != _JOURNAL_FORMAT):
        raise ChainError(f"chain journal {path}: first line is not a format-{_JOURNAL_FORMAT} genesis entry")
    return entries


# --------------------------------------------------------------------------- JSON-RPC


#: HTTP statuses worth retrying: rate limiting, and a node or gateway that is down or overloaded.
_TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
#: JSON-RPC error codes that mean "try again later" (EIP-1474's "limit exceeded").
_TRANSIENT_RPC = frozenset({-32005})
#: Development methods that act again each time they arrive: retried only when the request
#: cannot have reached the node (a refused connection), never after a lost answer.
_NOT_IDEMPOTENT = frozenset({"evm_increaseTime", "evm_mine", "anvil_mine", "evm_snapshot", "evm_revert", "anvil_reset"})


class _RetryingHTTPProvider(HTTPProvider):
    """web3's HTTP provider, retrying transient faults with exponential backoff.

    Retried: connection errors and timeouts, the HTTP statuses of :data:`_TRANSIENT_HTTP` and
    the JSON-RPC errors of :data:`_TRANSIENT_RPC`. Every other JSON-RPC error (a revert, "nonce
    too low"...) is an answer, returned at once. Retrying is safe because every method fedchain
    sends is idempotent (reads; ``eth_sendRawTransaction`` of the same signed bytes), except the
    development methods of :data:`_NOT_IDEMPOTENT`. When the retries are used up, or a fault is
    not transient, a :class:`~fedchain.errors.ChainConnectionError` names the URL and the method.
    """

    def __init__(self, url: str, *, retries: int, backoff: float, timeout: float) -> None:
        super().__init__(
            url, request_kwargs={"timeout": timeout}, session=_session_for(url), exception_retry_configuration=None
        )
        self._retries = retries
        self._backoff = backoff

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        url = str(self.endpoint_uri)
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = super().make_request(method, params)
            except requests.HTTPError as err:
                status = err.response.status_code if err.response is not None else None
                if last or status not in _TRANSIENT_HTTP or method in _NOT_IDEMPOTENT:
                    raise ChainConnectionError(url, f"{method}: HTTP {status} (attempt {attempt + 1})") from err
                problem = f"HTTP {status}"
            except (requests.ConnectionError, requests.Timeout) as err:
                if last or (method in _NOT_IDEMPOTENT and not _never_sent(err)):
                    raise ChainConnectionError(url, f"{method}: {_describe(err)} (attempt {attempt + 1})") from err
                problem = type(err).__name__
            else:
                error = response.get("error")
                if not isinstance(error, dict) or error.get("code") not in _TRANSIENT_RPC:
                    return response
                if last:
                    raise ChainConnectionError(url, f"{method}: JSON-RPC error {error} (attempt {attempt + 1})")
                problem = f"JSON-RPC error {error.get('code')}"
            delay = self._backoff * 2**attempt
            logger.warning("%s from %s for %s; retrying in %.2fs", problem, url, method, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # the last attempt returns or raises


def _session_for(url: str) -> requests.Session:
    """A ``requests`` session for ``url`` with the environment's settings for it read once.

    A session that trusts the environment looks up the proxy variables (walking the whole
    environment), the CA bundle variables and ``~/.netrc`` again for every request: about
    0.8 ms of a 0.8 ms request to a local node. The same settings, resolved for this one URL
    when the connection is made (``HTTP(S)_PROXY``/``NO_PROXY``, ``REQUESTS_CA_BUNDLE``/
    ``CURL_CA_BUNDLE``, netrc credentials), are fixed on the session instead, so every request
    goes out exactly as it did, without the lookups. (web3 uses a session given to it from any
    thread.)
    """
    session = requests.Session()
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update({k: v for k, v in settings["proxies"].items() if v})
    session.verify = settings["verify"]
    session.cert = settings["cert"]
    session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
    return session


def _never_sent(err: BaseException) -> bool:
    """Whether a requests error happened before the request could reach the server."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    reason = getattr(err.args[0], "reason", None) if err.args else None
    return isinstance(reason, NewConnectionError)


class RpcChain(Chain):
    """Any JSON-RPC node (anvil, geth, besu, a testnet) over HTTP.

    Requests are retried with exponential backoff (``backoff``, twice that, ...) while the node
    cannot be reached or answers with a transient error, ``retries`` times; then a
    :class:`~fedchain.errors.ChainConnectionError` names the URL. Sending is idempotent: the
    same signed bytes always have the same hash, and a send whose answer was lost is found on
    the node rather than sent again.
    """

    estimate_block = "pending"  # the next block, on the node's clock (see now)

    def __init__(self, url: str, *, retries: int = 6, backoff: float = 0.25, timeout: float = 30.0) -> None:
        self.endpoint = url
        self.w3 = _lean(Web3(_RetryingHTTPProvider(url, retries=retries, backoff=backoff, timeout=timeout)))
        self._clock_offset = 0
        self._pending_clock = True  # until the node shows it has no pending block (see now)
        try:
            self._chain_id = int(self.w3.eth.chain_id)
        except ChainConnectionError:
            raise
        except Exception as err:  # requests/web3 errors of many kinds
            raise ChainConnectionError(url, _describe(err)) from err

    @property
    def chain_id(self) -> int:
        return self._chain_id

    def now(self) -> int:
        """The timestamp of the node's pending block: what it would give a block mined now.

        The node's clock, not this machine's: anvil and hardhat fix their clock's offset in whole
        seconds when they start (and after a time jump), so a node may run up to a second behind
        the machine it runs on, or any amount behind on another machine. Judged by this
        machine's clock, a deadline passed up to that much early, and the contract refused to
        finalize a round with fewer updates than its quorum ("deadline has not passed").
        A node without a pending block: its latest block's timestamp or this machine's clock
        (moved by :meth:`advance_time`), whichever is later.
        """
        if self._pending_clock:
            try:
                pending = self.w3.eth.get_block("pending")
            except Web3RPCError as err:  # the node does not offer "pending" (BlockNotFound is one too)
                logger.info(
                    "%s gives no pending block (%s); its clock is read from the latest block", self.endpoint, err
                )
                self._pending_clock = False
            else:
                if pending is not None and pending.get("timestamp") is not None:
                    return int(pending["timestamp"])
                self._pending_clock = False
        latest = int(self.w3.eth.get_block("latest")["timestamp"])
        return max(latest, int(time.time()) + self._clock_offset)

    def get_logs(self, params: dict[str, Any]) -> list[Any]:
        """``eth_getLogs``, its answer shaped as web3 shapes it, by hand.

        web3's generic result formatting took about as long as the request itself (2 ms for
        the dozen logs of a round on a local node); the fields are few and fixed.
        """
        query = dict(params)
        for key in ("fromBlock", "toBlock"):
            if isinstance(query.get(key), int):
                query[key] = hex(query[key])
        raw = self.w3.manager.request_blocking(RPCEndpoint("eth_getLogs"), [query])
        return [_rpc_log(log) for log in raw]

    def send_raw_transaction(self, raw: bytes) -> HexBytes:
        tx_hash = HexBytes(Web3.keccak(raw))
        try:
            return HexBytes(self.w3.eth.send_raw_transaction(raw))
        except ChainConnectionError:
            raise  # the node cannot be asked either; the caller learns the URL
        except Exception as err:
            # A send retried after its answer was lost finds the transaction already there:
            # "already known"/"already imported" while pending, "nonce too low" once mined.
            # The same bytes have the same hash, so if the node knows the hash it was sent once.
            if self._knows(tx_hash):
                logger.info("transaction %s was already on %s (%s)", tx_hash.to_0x_hex(), self.endpoint, _describe(err))
                return tx_hash
            raise

    def _knows(self, tx_hash: HexBytes) -> bool:
        try:
            self.w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return False
        return True

    def fund(self, address: str, wei: int = DEV_FUNDING_WEI) -> None:
        # anvil answers anvil_setBalance; hardhat refuses it ("method not supported") and answers
        # hardhat_setBalance. A real network refuses both, as it should.
        params = [Web3.to_checksum_address(address), hex(wei)]
        self._dev_request(("anvil_setBalance", "hardhat_setBalance"), params, f"cannot fund {address}")

    def advance_time(self, seconds: int) -> None:
        # evm_increaseTime and evm_mine: anvil and hardhat both answer these.
        self._dev_request(("evm_increaseTime",), [seconds], "cannot travel in time")
        self._dev_request(("evm_mine",), [], "cannot mine a block")
        self._clock_offset += seconds

    def _dev_request(self, methods: tuple[str, ...], params: list[Any], what: str) -> None:
        """Send the first of ``methods`` the node knows (the same call in different dev-node dialects).

        The next method is tried only when the node answers that it does not know one;
        any other error answer is final.
        """
        errors: list[str] = []
        for method in methods:
            try:
                response = self.w3.provider.make_request(RPCEndpoint(method), params)
            except ChainConnectionError:
                raise
            except Exception as err:
                raise ChainError(f"{what} on {self.endpoint}: {_describe(err)}") from err
            error = response.get("error")
            if not error:
                return
            errors.append(f"{method} answered {error}")
            if not _unknown_method(error):
                break
        raise ChainError(f"{what} on {self.endpoint}: {'; '.join(errors)}")


#: JSON-RPC error codes for a method the node does not offer: EIP-1474's "method not found",
#: and "method not supported" (hardhat's answer to anvil_*).
_UNKNOWN_METHOD_CODES = frozenset({-32601, -32004})


def _unknown_method(error: Any) -> bool:
    """Whether a JSON-RPC error answer says the method itself is unknown (not that the call failed)."""
    if not isinstance(error, dict):
        return False
    if error.get("code") in _UNKNOWN_METHOD_CODES:
        return True
    message = str(error.get("message", "")).lower()
    return "not supported" in message or "method not found" in message or "does not exist" in message


def _describe(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) < 300 else text[:300] + "..."


def connect(rpc: str | None = None, *, journal: Path | None = None, read_only: bool = False) -> Chain:
    """Connect to ``rpc`` (an ``http(s)://`` URL) or, with no URL, start the embedded chain.

    Parameters
    ----------
    rpc:
        JSON-RPC URL of a node; ``None`` or ``"embedded"`` for the in-process chain.
    journal:
        For the embedded chain, the journal that persists it (see the module docstring).
    read_only:
        For the embedded chain, replay without allowing new transactions.
    """
    if rpc is None or rpc == "embedded":
        return EmbeddedChain(journal, read_only=read_only)
    if not rpc.startswith(("http://", "https://")):
        raise ChainConnectionError(rpc, "expected an http:// or https:// JSON-RPC URL")
    return RpcChain(rpc)


__all__ = ["DEV_FUNDING_WEI", "Chain", "EmbeddedChain", "RpcChain", "connect"]
