"""Turn the ledger contract's custom-error revert data into readable errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eth_abi.abi import decode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import is_address, to_checksum_address
from hexbytes import HexBytes

from fedchain import errors
from fedchain.errors import ContractRevertError
from fedchain.records import RoundStatus

_STATUS = {
    RoundStatus.NOT_OPENED: "not opened",
    RoundStatus.OPEN: "open",
    RoundStatus.CLOSED: "closed",
    RoundStatus.FINALIZED: "finalized",
    RoundStatus.ABANDONED: "abandoned",
}
#: Arguments holding a ``RoundStatus``: decoded into the enum (it still compares equal to the int).
_STATUS_ARGUMENTS = ("status", "previousStatus")

#: The error type raised for each custom error (anything else: a plain ContractRevertError).
ERROR_TYPES: Mapping[str, type[ContractRevertError]] = {
    "FederatedLedgerNotCoordinator": errors.NotCoordinatorError,
    "FederatedLedgerNotRegistered": errors.NotRegisteredError,
    "FederatedLedgerAlreadyRegistered": errors.AlreadyRegisteredError,
    "FederatedLedgerInvalidParticipant": errors.InvalidParticipantError,
    "FederatedLedgerZeroSamples": errors.ZeroSamplesError,
    "FederatedLedgerSampleCountAboveCap": errors.SampleCountAboveCapError,
    "FederatedLedgerAlreadySubmitted": errors.AlreadySubmittedError,
    "FederatedLedgerRoundNotOpen": errors.RoundNotOpenError,
    "FederatedLedgerRoundNotClosed": errors.RoundNotClosedError,
    "FederatedLedgerRoundNotInProgress": errors.RoundNotInProgressError,
    "FederatedLedgerDeadlinePassed": errors.DeadlinePassedError,
    "FederatedLedgerRoundOutOfSequence": errors.RoundOutOfSequenceError,
    "FederatedLedgerPreviousRoundNotEnded": errors.PreviousRoundNotEndedError,
    "FederatedLedgerBaseModelMismatch": errors.BaseModelMismatchError,
    "FederatedLedgerInvalidDeadline": errors.InvalidDeadlineError,
    "FederatedLedgerInvalidQuorum": errors.InvalidQuorumError,
    "FederatedLedgerQuorumNotReached": errors.QuorumNotReachedError,
    "FederatedLedgerUpdateNotRecorded": errors.UpdateNotRecordedError,
    "FederatedLedgerIncludedNotSorted": errors.IncludedNotSortedError,
    "FederatedLedgerEmptyHash": errors.EmptyHashError,
}


def _fmt(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, str) and is_address(value):
        return str(to_checksum_address(value))
    return str(value)


#: A sentence for each custom error, filled from its named arguments.
_MESSAGES: Mapping[str, str] = {
    "FederatedLedgerNotCoordinator": "{account} is not the coordinator",
    "FederatedLedgerNotRegistered": "{account} is not a registered participant",
    "FederatedLedgerAlreadyRegistered": "participant {account} is already registered",
    "FederatedLedgerInvalidParticipant": "{account} cannot be a participant",
    "FederatedLedgerZeroSamples": "a sample count or cap of zero for participant {participant}",
    "FederatedLedgerSampleCountAboveCap": (
        "participant {participant} declared {numSamples} samples, above its registered cap of {maxSamples}"
    ),
    "FederatedLedgerAlreadySubmitted": "participant {participant} already submitted for round {roundId}",
    "FederatedLedgerRoundNotOpen": "round {roundId} is not open (it is {status})",
    "FederatedLedgerRoundNotClosed": "round {roundId} is not closed (it is {status}): only a closed round is finalized",
    "FederatedLedgerRoundNotInProgress": "round {roundId} is {status}: only an open or closed round can be abandoned",
    "FederatedLedgerDeadlinePassed": "round {roundId} closed at {deadline}; block time is {timestamp}",
    "FederatedLedgerRoundOutOfSequence": "round {roundId} is out of sequence: the next round is {expected}",
    "FederatedLedgerBaseModelMismatch": ("round {roundId} must build on {expected} (the last aggregate), not {actual}"),
    "FederatedLedgerInvalidDeadline": "deadline {deadline} is not after the block time {timestamp}",
    "FederatedLedgerInvalidQuorum": "a quorum of {minUpdates} updates is not allowed",
    "FederatedLedgerQuorumNotReached": (
        "round {roundId} has {included} of {minUpdates} updates and its deadline {deadline} has not passed"
    ),
    "FederatedLedgerUpdateNotRecorded": "participant {participant} recorded no update in round {roundId}",
    "FederatedLedgerIncludedNotSorted": "included list not in ascending address order at index {index} ({participant})",
    "FederatedLedgerPreviousRoundNotEnded": (
        "round {roundId} cannot open while the previous round is {previousStatus} (not finalized or abandoned)"
    ),
    "FederatedLedgerEmptyHash": "a digest of zero",
}


class RevertDecoder:
    """Decode revert data against the custom errors of an ABI."""

    def __init__(self, abi: Sequence[Mapping[str, Any]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [inp["type"] for inp in item["inputs"]]
            names = [inp["name"] for inp in item["inputs"]]
            signature = f"{item['name']}({','.join(types)})"
            self._errors[function_signature_to_4byte_selector(signature)] = (item["name"], types, names)

    def decode(self, data: bytes) -> ContractRevertError | None:
        """The error ``data`` encodes, or ``None`` if it is none of the ABI's custom errors."""
        entry = self._errors.get(bytes(data[:4]))
        if entry is None:
            return None
        name, types, names = entry
        try:
            values = decode(types, bytes(data[4:]))
        except Exception:  # noqa: BLE001 - a malformed payload is not ours to interpret
            return None
        arguments: dict[str, Any] = {
            n: to_checksum_address(v) if isinstance(v, str) and is_address(v) else v
            for n, v in zip(names, values, strict=True)
        }
        shown = {k: _fmt(v) for k, v in arguments.items()}
        for key in _STATUS_ARGUMENTS:
            if key in arguments and int(arguments[key]) in RoundStatus._value2member_map_:
                arguments[key] = RoundStatus(int(arguments[key]))
                shown[key] = _STATUS[arguments[key]]
        message = _MESSAGES.get(name, name).format(**shown)
        return ERROR_TYPES.get(name, ContractRevertError)(name, arguments, message)

    def from_exception(self, err: BaseException) -> ContractRevertError | None:
        """Find revert data in a web3/provider exception and decode it."""
        data = revert_data(err)
        return self.decode(data) if data is not None else None


def revert_data(err: BaseException) -> bytes | None:
    """Dig the revert payload out of the ways web3 and nodes report it.

    web3 puts it in ``err.data`` (hex); JSON-RPC nodes in the error object's ``data``;
    eth-tester raises ``TransactionFailed`` whose cause carries the raw bytes. The whole
    ``__cause__``/``__context__`` chain is searched.
    """
    candidates: list[Any] = []
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        candidates.append(getattr(current, "data", None))
        candidates.extend(current.args)
        current = current.__cause__ or current.__context__
    for candidate in candidates:
        if isinstance(candidate, dict):
            candidate = candidate.get("data")
            if isinstance(candidate, dict):  # some nodes nest {"data": {"data": ...}}
                candidate = candidate.get("data")
        if isinstance(candidate, (bytes, bytearray)) and len(candidate) >= 4:
            return bytes(candidate)
        if isinstance(candidate, str):
            text = candidate.strip()
            if text.startswith("0x") and len(text) >= 10:
                try:
                    return bytes(HexBytes(text))
                except ValueError:
                    continue
    return None


__all__ = ["ERROR_TYPES", "RevertDecoder", "revert_data"]
