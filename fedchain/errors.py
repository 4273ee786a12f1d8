"""One exception tree, rooted at :class:`FedchainError`, a subtree per domain.

Every constructor takes the structured facts and keeps them as attributes; the message
is built from them, so a caller can both print the error and act on its fields.
Foreign errors are wrapped with ``raise ... from err``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class FedchainError(Exception):
    """Base of every error fedchain raises on purpose."""


# --------------------------------------------------------------------------- config


class ConfigError(FedchainError, ValueError):
    """A configuration value is missing or wrong.

    Parameters
    ----------
    key:
        The configuration key (dotted for nested tables), or the file.
    problem:
        What is wrong with it, as a phrase.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class DigestFormatError(FedchainError, ValueError):
    """A string or byte string that should be a 32-byte digest is not one."""

    def __init__(self, value: str, problem: str) -> None:
        self.value = value
        self.problem = problem
        super().__init__(f"not a sha256 digest ({problem}): {value[:80]}")


# --------------------------------------------------------------------------- chain


class ChainError(FedchainError):
    """Anything that went wrong talking to the chain or the ledger contract."""


class ChainConnectionError(ChainError, ConnectionError):
    """The chain node could not be reached (after retries, where retries apply)."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"cannot reach chain node at {endpoint}: {reason}")


class ContractRevertError(ChainError):
    """The ledger contract rejected a call with one of its custom errors.

    Parameters
    ----------
    name:
        The custom error's name, e.g. ``FederatedLedgerAlreadySubmitted``.
    arguments:
        Its decoded arguments by parameter name.
    message:
        A human sentence built from the arguments.
    """

    def __init__(self, name: str, arguments: Mapping[str, Any], message: str) -> None:
        self.name = name
        self.arguments = dict(arguments)
        super().__init__(f"{message} ({name})")


# One subclass per custom error of the ledger contract, chosen by the decoded error's name
# (fedchain.chain._revert), so callers catch a type instead of comparing ``name``.


class NotCoordinatorError(ContractRevertError):
    """``FederatedLedgerNotCoordinator``: only the coordinator may do this."""


class NotRegisteredError(ContractRevertError):
    """``FederatedLedgerNotRegistered``: the account is not a registered participant."""


class AlreadyRegisteredError(ContractRevertError):
    """``FederatedLedgerAlreadyRegistered``."""


class InvalidParticipantError(ContractRevertError):
    """``FederatedLedgerInvalidParticipant``: the zero address."""


class ZeroSamplesError(ContractRevertError):
    """``FederatedLedgerZeroSamples``: a sample count or cap of zero."""


class SampleCountAboveCapError(ContractRevertError):
    """``FederatedLedgerSampleCountAboveCap``."""


class AlreadySubmittedError(ContractRevertError):
    """``FederatedLedgerAlreadySubmitted``: the participant's update for the round is recorded already."""


class RoundNotOpenError(ContractRevertError):
    """``FederatedLedgerRoundNotOpen``: not open (not opened yet, closed, or ended); ``arguments["status"]`` says which."""


class RoundNotClosedError(ContractRevertError):
    """``FederatedLedgerRoundNotClosed``: only a closed round can be finalized."""


class RoundNotInProgressError(ContractRevertError):
    """``FederatedLedgerRoundNotInProgress``: only an open or closed round can be abandoned."""


class DeadlinePassedError(ContractRevertError):
    """``FederatedLedgerDeadlinePassed``: the block time is past the round's deadline."""


class RoundOutOfSequenceError(ContractRevertError):
    """``FederatedLedgerRoundOutOfSequence``: not the next round."""


class PreviousRoundNotEndedError(ContractRevertError):
    """``FederatedLedgerPreviousRoundNotEnded``: the previous round is still open or closed."""


class BaseModelMismatchError(ContractRevertError):
    """``FederatedLedgerBaseModelMismatch``: the base is not the last aggregate."""


class InvalidDeadlineError(ContractRevertError):
    """``FederatedLedgerInvalidDeadline``: a deadline not in the future."""


class InvalidQuorumError(ContractRevertError):
    """``FederatedLedgerInvalidQuorum``: a quorum of zero."""


class QuorumNotReachedError(ContractRevertError):
    """``FederatedLedgerQuorumNotReached``: too few included updates before the deadline."""


class UpdateNotRecordedError(ContractRevertError):
    """``FederatedLedgerUpdateNotRecorded``: the included list names a participant with no update."""


class IncludedNotSortedError(ContractRevertError):
    """``FederatedLedgerIncludedNotSorted``: the included list is not strictly ascending."""


class EmptyHashError(ContractRevertError):
    """``FederatedLedgerEmptyHash``: a digest of zero."""


class UnknownContractError(ChainError):
    """The code at an address is not the runtime code of a shipped ledger artifact.

    Parameters
    ----------
    address:
        The address looked at.
    reason:
        What differs (no code, another length, the first differing byte).
    """

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"unknown contract code at {address}: {reason}")


class TransactionError(ChainError):
    """A transaction failed for a reason other than a decoded custom error."""

    def __init__(self, action: str, reason: str, tx_hash: str | None = None) -> None:
        self.action = action
        self.reason = reason
        self.tx_hash = tx_hash
        where = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"{action} failed{where}: {reason}")


class CompilationError(ChainError):
    """The Solidity compiler could not be run or reported errors."""


class ArtifactMismatchError(ChainError):
    """The committed contract artifact differs from a fresh compile."""


# --------------------------------------------------------------------------- storage


class StorageError(FedchainError):
    """Anything that went wrong storing or fetching a blob."""


class BlobNotFoundError(StorageError, LookupError):
    """The store holds no blob (or no block) for a CID."""

    def __init__(self, cid: str, block: str | None = None) -> None:
        self.cid = cid
        self.block = block
        what = f"block {block} of {cid}" if block and block != cid else cid
        super().__init__(f"not in the store: {what}")


class IntegrityError(StorageError):
    """Bytes read back do not match the CID (or block CID) that names them."""

    def __init__(self, cid: str, block: str, problem: str) -> None:
        self.cid = cid
        self.block = block
        self.problem = problem
        super().__init__(f"integrity check failed for {cid}, block {block}: {problem}")


class DigestMismatchError(IntegrityError):
    """A blob's bytes do not hash to the sha256 the caller expected (for example the ledger's).

    Parameters
    ----------
    cid:
        The blob read.
    expected, actual:
        The sha256 digest the caller gave, and that of the bytes the store holds under ``cid``.
    """

    def __init__(self, cid: str, expected: bytes, actual: bytes) -> None:
        self.expected = bytes(expected)
        self.actual = bytes(actual)
        super().__init__(
            cid, cid, f"the blob's bytes hash to sha256 0x{self.actual.hex()}, expected 0x{self.expected.hex()}"
        )


class BlobTooLargeError(StorageError, ValueError):
    """A blob exceeds the configured maximum size; refused before it is read."""

    def __init__(self, size: int, limit: int, what: str = "blob") -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what} of {size} bytes exceeds the limit of {limit} bytes")


class StoreUnavailableError(StorageError, ConnectionError):
    """The store (a directory or a kubo daemon) cannot be used."""

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"store {location} unavailable: {reason}")


class CarFormatError(StorageError, ValueError):
    """A CAR file is malformed."""


class CidFormatError(StorageError, ValueError):
    """A string or byte string that should be a CID is not one (or names no UnixFS blob)."""

    def __init__(self, value: str, problem: str) -> None:
        self.value = value
        self.problem = problem
        super().__init__(f"not a usable CID ({problem}): {value[:100]}")


# --------------------------------------------------------------------------- federated learning


class CodecError(FedchainError, ValueError):
    """A blob is not a valid canonical update or model; it is rejected, never used.

    Parameters
    ----------
    reason:
        A short machine-friendly code (``nan``, ``shape``, ``dtype``, ``truncated``,
        ``not-safetensors``, ``metadata``, ``too-large``, ``norm``, ...).
    detail:
        The human explanation, naming the tensor or field.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class AggregationError(FedchainError):
    """Aggregation could not be carried out."""


class DataError(FedchainError, ValueError):
    """A participant's local data could not be loaded."""


# --------------------------------------------------------------------------- verification


class VerificationError(FedchainError):
    """The ledger and what it points to disagree: nothing may be accepted.

    Parameters
    ----------
    round_id:
        The round that failed verification.
    what:
        Which check failed, e.g. ``update hash``, ``aggregate``, ``lineage``.
    participant:
        The participant concerned, if any.
    expected, actual:
        The two sides of the mismatch, as printable strings.
    """

    def __init__(
        self,
        round_id: int,
        what: str,
        *,
        participant: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        self.round_id = round_id
        self.what = what
        self.participant = participant
        self.expected = expected
        self.actual = actual
        who = f", participant {participant}" if participant else ""
        diff = f": expected {expected}, got {actual}" if expected is not None or actual is not None else ""
        super().__init__(f"round {round_id}{who}: {what} mismatch{diff}")


__all__ = [
    "AggregationError",
    "AlreadyRegisteredError",
    "AlreadySubmittedError",
    "ArtifactMismatchError",
    "BaseModelMismatchError",
    "BlobNotFoundError",
    "BlobTooLargeError",
    "CarFormatError",
    "ChainConnectionError",
    "ChainError",
    "CidFormatError",
    "CodecError",
    "CompilationError",
    "ConfigError",
    "ContractRevertError",
    "DataError",
    "DeadlinePassedError",
    "DigestFormatError",
    "DigestMismatchError",
    "EmptyHashError",
    "FedchainError",
    "IncludedNotSortedError",
    "IntegrityError",
    "InvalidDeadlineError",
    "InvalidParticipantError",
    "InvalidQuorumError",
    "NotCoordinatorError",
    "NotRegisteredError",
    "PreviousRoundNotEndedError",
    "QuorumNotReachedError",
    "RoundNotClosedError",
    "RoundNotInProgressError",
    "RoundNotOpenError",
    "RoundOutOfSequenceError",
    "SampleCountAboveCapError",
    "StorageError",
    "StoreUnavailableError",
    "TransactionError",
    "UnknownContractError",
    "UpdateNotRecordedError",
    "VerificationError",
    "ZeroSamplesError",
]
