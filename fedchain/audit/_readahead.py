"""Reading ahead for the audit: the blobs of the coming rounds read in worker threads.

An audit's work is of two kinds. Reading: every blob each round records, checked against
its recorded digest as it is read (:meth:`BlobStore.get_verified`: mostly hashing and file
or network I/O, which run without the GIL). Verifying: decoding, aggregating and comparing
(mostly numpy), and reading the chain. :class:`ReadAhead` hands the blob reads of the coming
rounds to worker threads, a few blobs ahead of the verification, so that on a machine with
two cores blobs are hashed beside the arithmetic and beside each other.

Nothing is checked less, and nothing is reported differently:

- the reads made ahead are exactly the ``get_verified`` calls the verifier will make, in the
  order it makes them (a round's updates in the order of its history, then its aggregate),
  with the same arguments; a blob reaches the verifier only as ``get_verified`` returned it,
  for the very CID, digest and size limit the verifier asks for;
- whatever a read raised is raised in the verifier's thread, at the point where the verifier
  makes that read; a read the verifier makes that was not made ahead (a round's base when it
  is not the previous aggregate, the block-by-block reads that name a failure) is simply
  made then, as without read-ahead, and reads made ahead that the verifier turns out not to
  need (a round that failed before its aggregate was read) are dropped;
- the chain is read in the caller's thread, through :meth:`Ledger.history`, a round or so
  ahead; an error reading a round is raised when the caller asks for that round;
- with ``squares``, the worker that read an update blob also computes its
  :func:`~fedchain.fl.codec.sum_of_squares_after_header` (the exact sum behind its norm, from
  the bytes alone), which :attr:`ReadAhead.store` hands over through ``squares_of(blob)`` for
  that very buffer; the decoder uses it only if it covers exactly the update's tensors, so the
  norm is the same float as the decoder's own, computed beside the hashing instead of in the
  verifier's thread.

Memory: at most :data:`DEPTH` blobs are being read or wait to be taken, besides those the
verifier holds, and up to :data:`POOLED` read buffers are kept to be filled again (see
:mod:`fedchain.storage._buffers`) until the read-ahead is closed and their holders let go.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO, Protocol

from fedchain.fl.codec import SumOfSquares, sum_of_squares_after_header
from fedchain.records import RoundHistory
from fedchain.storage import BlobStore
from fedchain.storage._buffers import BufferPool, reading_into
from fedchain.types import Cid

logger = logging.getLogger(__name__)

#: Blobs being read ahead, or read and waiting for the verifier, at most.
DEPTH = 4
#: Worker threads reading blobs when the store allows concurrent reads.
WORKERS = 2
#: Read buffers kept for reuse: those read ahead, and a round's worth the verifier may still hold.
POOLED = 2 * DEPTH

_Key = tuple[str, bytes, int, bool]  # get_verified's cid, sha256, max_size, check_cid


class RoundSource(Protocol):
    """Where rounds come from: :class:`fedchain.chain.Ledger`."""

    def history(self) -> Iterator[RoundHistory]:
        """Every round, oldest first."""
        ...


@dataclass
class _Read:
    """A ``get_verified`` call the verifier of round ``index`` (counted from the first round read) will make."""

    index: int
    key: _Key
    squares: bool = False
    future: Future[tuple[bytearray, SumOfSquares | None]] | None = field(default=None)


class ReadAhead:
    """Read the blobs of ``ledger``'s coming rounds in worker threads, ahead of the caller.

    Use as a context manager; iterate :meth:`rounds` and verify each round against
    :attr:`store`, which hands over the blobs read ahead and passes anything else to the
    real store.

    Parameters
    ----------
    ledger, store:
        Where the history and the blobs are.
    max_blob_size:
        The size limit the verifier passes to ``get_verified``.
    check_cids:
        Make every ``get_verified`` call through :attr:`store` with ``check_cid=True``
        (every leaf block checked against its CID as well as the blob against its digest).
    squares:
        Compute each update blob's sum of squares on the thread that read it (for plain
        rounds, whose updates are float32 tensors; a masked blob's would go unused).
    """

    def __init__(
        self,
        ledger: RoundSource,
        store: BlobStore,
        *,
        max_blob_size: int,
        check_cids: bool = False,
        squares: bool = False,
    ) -> None:
        self._histories = ledger.history()
        self._max_blob_size = max_blob_size
        self._check_cids = check_cids
        self._squares = squares
        concurrent = bool(getattr(store, "concurrent_reads", False))
        # a store that is not safe to call from several threads at once is called by one at a time
        self.store = _ReadAheadStore(store, self, None if concurrent else threading.Lock(), check_cids)
        self._pool = ThreadPoolExecutor(WORKERS if concurrent else 1, thread_name_prefix="fedchain-audit-read")
        self._read_rounds: collections.deque[tuple[int, RoundHistory] | BaseException] = collections.deque()
        self._unsent: collections.deque[_Read] = collections.deque()
        self._sent: collections.deque[_Read] = collections.deque()
        self._pulled = 0
        self._exhausted = False
        self._current = -1

    def __enter__(self) -> ReadAhead:  # noqa: PYI034 - subclasses are not expected
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Drop what was read ahead and stop the workers (after the reads they are making)."""
        for read in self._sent:
            if read.future is not None:
                read.future.cancel()
        self._sent.clear()
        self._unsent.clear()
        self._pool.shutdown(wait=True)

    def rounds(self) -> Iterator[RoundHistory]:
        """The ledger's rounds, oldest first, as :meth:`Ledger.history` yields them.

        Raises
        ------
        ChainError
            Or whatever else reading a round raised, when that round is asked for.
        """
        while True:
            if not self._read_rounds:
                self._pull()
            if not self._read_rounds:
                return
            item = self._read_rounds.popleft()
            if isinstance(item, BaseException):
                raise item
            self._current, history = item
            self._drop_stale()
            self._send()
            yield history

    # ------------------------------------------------------------------ planning and sending reads

    def _pull(self) -> bool:
        """Read the next round from the chain and plan its blob reads; ``False`` if there is none."""
        if self._exhausted:
            return False
        try:
            history = next(self._histories)
        except StopIteration:
            self._exhausted = True
            return False
        except Exception as err:  # noqa: BLE001 - raised when the caller asks for this round
            self._exhausted = True
            self._read_rounds.append(err)
            return False
        index = self._pulled
        self._pulled += 1
        self._read_rounds.append((index, history))
        self._unsent.extend(
            _Read(index, key, self._squares and is_update)
            for key, is_update in _reads_of(history, self._max_blob_size, self._check_cids)
        )
        return True

    def _send(self) -> None:
        """Hand reads to the workers, in order, until :data:`DEPTH` are out."""
        while len(self._sent) < DEPTH:
            if not self._unsent and not self._pull():
                return
            if not self._unsent:
                continue  # a round with no blobs to read
            read = self._unsent.popleft()
            cid, digest, max_size, check_cid = read.key
            read.future = self._pool.submit(self.store.read_ahead, cid, digest, max_size, check_cid, read.squares)
            self._sent.append(read)

    def _drop_stale(self) -> None:
        """Forget reads planned for rounds before the current one (the verifier did not need them)."""
        while self._sent and self._sent[0].index < self._current:
            read = self._sent.popleft()
            if read.future is not None:
                read.future.cancel()
        while self._unsent and self._unsent[0].index < self._current:
            self._unsent.popleft()

    def _take(self, key: _Key) -> Future[tuple[bytearray, SumOfSquares | None]] | None:
        """The read made ahead for ``key`` if it is the next one of the current round, else ``None``."""
        self._drop_stale()
        if not self._sent or self._sent[0].index != self._current or self._sent[0].key != key:
            return None
        read = self._sent.popleft()
        self._send()
        return read.future


def _reads_of(history: RoundHistory, max_blob_size: int, check_cid: bool) -> list[tuple[_Key, bool]]:
    """The ``get_verified`` calls verifying ``history`` makes, in order (see :mod:`fedchain.protocol.verify`),
    each with whether it reads an update."""
    keys = [((str(u.cid), bytes(u.update_hash), max_blob_size, check_cid), True) for u in history.updates]
    if history.aggregate is not None:
        agg = history.aggregate
        keys.append(((str(agg.cid), bytes(agg.aggregate_hash), max_blob_size, check_cid), False))
    return keys


class _ReadAheadStore:
    """A :class:`BlobStore` serving the blobs read ahead, and passing every other call to the real store."""

    def __init__(self, store: BlobStore, owner: ReadAhead, lock: threading.Lock | None, check_cids: bool) -> None:
        self._store = store
        self._owner = owner
        self._lock = lock
        self._check_cids = check_cids
        # sums of squares of the buffers handed over, until the verifier asks for them (a few at most)
        self._squares: collections.OrderedDict[int, tuple[bytearray, SumOfSquares]] = collections.OrderedDict()
        self._squares_lock = threading.Lock()
        # the buffers blobs read ahead are read into, each filled again once the verifier has let go of it
        self._buffers = BufferPool(keep=POOLED)

    def read_ahead(
        self, cid: str, sha256: bytes, max_size: int, check_cid: bool, squares: bool
    ) -> tuple[bytearray, SumOfSquares | None]:
        """A worker's read: the blob, and with ``squares`` its sum of squares after the header."""
        with reading_into(self._buffers):
            blob = self.real_get_verified(cid, sha256, max_size=max_size, check_cid=check_cid)
        return blob, sum_of_squares_after_header(blob) if squares else None

    def squares_of(self, blob: bytearray) -> SumOfSquares | None:
        """The sum of squares computed for this very buffer when it was read ahead, if any (handed over once)."""
        with self._squares_lock:
            entry = self._squares.pop(id(blob), None)
        return entry[1] if entry is not None and entry[0] is blob else None

    def real_get_verified(
        self, cid: str, sha256: bytes, *, max_size: int | None = None, check_cid: bool = False
    ) -> bytearray:
        if self._lock is None:
            return self._store.get_verified(cid, sha256, max_size=max_size, check_cid=check_cid)
        with self._lock:
            return self._store.get_verified(cid, sha256, max_size=max_size, check_cid=check_cid)

    def get_verified(
        self, cid: str, sha256: bytes, *, max_size: int | None = None, check_cid: bool = False
    ) -> bytearray:
        """The blob read ahead for exactly these arguments, or else a read made now."""
        check_cid = check_cid or self._check_cids
        if max_size is not None:
            future = self._owner._take((str(cid), bytes(sha256), max_size, check_cid))
            if future is not None:
                blob, squares = future.result()  # raises what the read raised
                if squares is not None:
                    with self._squares_lock:
                        self._squares[id(blob)] = (blob, squares)
                        while len(self._squares) > DEPTH:  # never asked for: do not keep its buffer alive
                            self._squares.popitem(last=False)
                return blob
        return self.real_get_verified(cid, sha256, max_size=max_size, check_cid=check_cid)

    @property
    def location(self) -> str:
        return self._store.location

    @property
    def max_blob_size(self) -> int:
        return self._store.max_blob_size

    @property
    def concurrent_reads(self) -> bool:
        return self._lock is None

    def put(self, data: bytes, *, version: int = 0) -> Cid:
        with self._locked():
            return self._store.put(data, version=version)

    def put_stream(self, stream: BinaryIO, *, version: int = 0) -> Cid:
        with self._locked():
            return self._store.put_stream(stream, version=version)

    def get(self, cid: str, *, max_size: int | None = None) -> bytes:
        with self._locked():
            return self._store.get(cid, max_size=max_size)

    def get_to(self, cid: str, out: BinaryIO, *, max_size: int | None = None) -> int:
        with self._locked():
            return self._store.get_to(cid, out, max_size=max_size)

    def size(self, cid: str) -> int:
        with self._locked():
            return self._store.size(cid)

    def has(self, cid: str) -> bool:
        with self._locked():
            return self._store.has(cid)

    def pin(self, cid: str) -> None:
        with self._locked():
            self._store.pin(cid)

    def unpin(self, cid: str) -> None:
        with self._locked():
            self._store.unpin(cid)

    def export_car(self, cid: str, out: BinaryIO) -> int:
        with self._locked():
            return self._store.export_car(cid, out)

    def import_car(self, stream: BinaryIO) -> list[Cid]:
        with self._locked():
            return self._store.import_car(stream)

    def close(self) -> None:
        """Nothing: the real store belongs to the audit's caller."""

    def _locked(self) -> threading.Lock | _NoLock:
        return self._lock if self._lock is not None else _NO_LOCK


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


__all__ = ["DEPTH", "WORKERS", "ReadAhead", "RoundSource"]
