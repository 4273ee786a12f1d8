// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IFederatedLedger} from "./IFederatedLedger.sol";

/// @title FederatedLedger
/// @notice The on-chain audit trail of one federated training run. See {IFederatedLedger}.
/// @dev Storage per update is exactly one slot (its sha256 digest). The round in progress lives
/// in one fixed slot (`_current`) that every round rewrites, and the last aggregate in another
/// (`_lastAggregate`): rewriting a non-zero slot costs ~5,000 gas where a fresh one costs ~22,100,
/// which pays for the close transaction. Each round gets one slot of its own (`_rounds`) only
/// when it ends, holding its blocks, so that a reader of one past round's events queries only
/// that round's blocks. Aggregate digests of past rounds are in their `RoundFinalized` events.
contract FederatedLedger is IFederatedLedger {
    /// @dev The round in progress, or the last round if it has ended. One storage slot:
    /// 8 + 40 + 8 + 64 + 32 + 40 + 40 = 232 bits. `deployed` is always true: it keeps the slot
    /// non-zero from deployment on, so that opening round 0 rewrites a slot instead of creating one.
    struct Current {
        bool deployed;
        uint40 nextRound;
        RoundStatus status;
        uint64 deadline;
        uint32 minUpdates;
        uint40 openedBlock;
        uint40 closedBlock;
    }

    /// @dev An ended round, written once by `finalizeRound` or `abandonRound`. One storage slot:
    /// 64 + 32 + 32 + 8 + 40 + 40 + 40 = 256 bits.
    struct PastRound {
        uint64 deadline;
        uint32 minUpdates;
        uint32 included;
        RoundStatus status;
        uint40 openedBlock;
        uint40 closedBlock;
        uint40 endBlock;
    }

    /// @dev One storage slot per participant, read once per submission.
    struct Participant {
        bool registered;
        bool known;
        uint64 maxSamples;
    }

    address private immutable _coordinator;
    bytes32 private immutable _genesisModelHash;
    bytes32 private immutable _manifestHash;
    uint256 private immutable _deployedBlock;

    Current private _current;
    /// @dev The base the next round must build on; the genesis model until a round is finalized.
    bytes32 private _lastAggregate;
    address[] private _participantList;
    mapping(address account => Participant) private _participants;
    mapping(uint256 roundId => PastRound) private _rounds;
    mapping(uint256 roundId => mapping(address participant => bytes32 updateHash)) private _updates;
    /// @dev One slot per participant of a private federation: its current masking public key.
    mapping(address participant => bytes32 publicKey) private _maskingKeys;

    modifier onlyCoordinator() {
        if (msg.sender != _coordinator) revert FederatedLedgerNotCoordinator(msg.sender);
        _;
    }

    /// @param genesisModelHash_ sha256 of the model round 0 builds on.
    /// @param genesisModelCid Where that model is stored (emitted, not stored).
    /// @param manifestHash_ sha256 of the federation manifest blob.
    /// @param manifestCid Where the manifest is stored (emitted, not stored).
    constructor(
        bytes32 genesisModelHash_,
        string memory genesisModelCid,
        bytes32 manifestHash_,
        string memory manifestCid
    ) {
        if (genesisModelHash_ == bytes32(0) || manifestHash_ == bytes32(0)) revert FederatedLedgerEmptyHash();
        _coordinator = msg.sender;
        _genesisModelHash = genesisModelHash_;
        _manifestHash = manifestHash_;
        _deployedBlock = block.number;
        _lastAggregate = genesisModelHash_;
        _current.deployed = true;
        emit LedgerCreated(msg.sender, genesisModelHash_, genesisModelCid, manifestHash_, manifestCid);
    }

    // ------------------------------------------------------------------ coordinator

    /// @inheritdoc IFederatedLedger
    function registerParticipant(address participant, uint64 maxSamples) external onlyCoordinator {
        if (participant == address(0)) revert FederatedLedgerInvalidParticipant(participant);
        if (maxSamples == 0) revert FederatedLedgerZeroSamples(participant);
        Participant storage p = _participants[participant];
        if (p.registered) revert FederatedLedgerAlreadyRegistered(participant);
        if (!p.known) _participantList.push(participant);
        _participants[participant] = Participant({registered: true, known: true, maxSamples: maxSamples});
        emit ParticipantRegistered(participant, maxSamples);
    }

    /// @inheritdoc IFederatedLedger
    function removeParticipant(address participant) external onlyCoordinator {
        Participant storage p = _participants[participant];
        if (!p.registered) revert FederatedLedgerNotRegistered(participant);
        p.registered = false;
        emit ParticipantRemoved(participant);
    }

    /// @inheritdoc IFederatedLedger
    function openRound(
        uint256 roundId,
        bytes32 baseModelHash,
        string calldata baseModelCid,
        uint64 deadline,
        uint32 minUpdates
    ) external onlyCoordinator {
        Current memory current = _current;
        if (roundId != current.nextRound) revert FederatedLedgerRoundOutOfSequence(current.nextRound, roundId);
        if (current.status == RoundStatus.Open || current.status == RoundStatus.Closed) {
            revert FederatedLedgerPreviousRoundNotEnded(roundId, current.status);
        }
        bytes32 expectedBase = _lastAggregate;
        if (baseModelHash != expectedBase) revert FederatedLedgerBaseModelMismatch(roundId, expectedBase, baseModelHash);
        if (deadline <= block.timestamp) revert FederatedLedgerInvalidDeadline(deadline, block.timestamp);
        if (minUpdates == 0) revert FederatedLedgerInvalidQuorum(minUpdates);

        // Cannot overflow or truncate: roundId == nextRound < 2**40 - 1 (each round costs a
        // transaction, and a trillion of them is out of reach), and block numbers stay below
        // 2**40 for tens of thousands of years at a block a second.
        unchecked {
            _current = Current({
                deployed: true,
                nextRound: uint40(roundId + 1),
                status: RoundStatus.Open,
                deadline: deadline,
                minUpdates: minUpdates,
                openedBlock: uint40(block.number),
                closedBlock: 0
            });
        }
        emit RoundOpened(roundId, baseModelHash, baseModelCid, deadline, minUpdates);
    }

    /// @inheritdoc IFederatedLedger
    function closeRound(uint256 roundId) external onlyCoordinator {
        Current storage current = _current;
        if (!_isCurrent(roundId, current.nextRound) || current.status != RoundStatus.Open) {
            revert FederatedLedgerRoundNotOpen(roundId, _status(roundId));
        }
        current.status = RoundStatus.Closed;
        // Cannot truncate: block numbers stay below 2**40 (see openRound).
        current.closedBlock = uint40(block.number);
        emit RoundClosed(roundId);
    }

    /// @inheritdoc IFederatedLedger
    function finalizeRound(
        uint256 roundId,
        bytes32 aggregateHash,
        string calldata aggregateCid,
        address[] calldata included
    ) external onlyCoordinator {
        Current memory current = _current;
        if (!_isCurrent(roundId, current.nextRound) || current.status != RoundStatus.Closed) {
            revert FederatedLedgerRoundNotClosed(roundId, _status(roundId));
        }
        if (aggregateHash == bytes32(0)) revert FederatedLedgerEmptyHash();
        uint256 count = included.length;
        if (count < current.minUpdates && block.timestamp <= current.deadline) {
            revert FederatedLedgerQuorumNotReached(roundId, count, current.minUpdates, current.deadline);
        }
        mapping(address participant => bytes32 updateHash) storage updates = _updates[roundId];
        address previous = address(0);
        for (uint256 i = 0; i < count;) {
            address participant = included[i];
            if (participant <= previous) revert FederatedLedgerIncludedNotSorted(i, participant);
            if (updates[participant] == bytes32(0)) revert FederatedLedgerUpdateNotRecorded(roundId, participant);
            previous = participant;
            // Cannot overflow: i < count, the length of a calldata array.
            unchecked {
                ++i;
            }
        }
        // Cannot truncate: the included participants are distinct accounts with recorded updates,
        // far fewer than 2**32 (each costs a registration transaction).
        _end(roundId, current, RoundStatus.Finalized, uint32(count));
        _lastAggregate = aggregateHash;
        emit RoundFinalized(roundId, aggregateHash, aggregateCid, included);
    }

    /// @inheritdoc IFederatedLedger
    function abandonRound(uint256 roundId) external onlyCoordinator {
        Current memory current = _current;
        if (
            !_isCurrent(roundId, current.nextRound)
                || (current.status != RoundStatus.Open && current.status != RoundStatus.Closed)
        ) {
            revert FederatedLedgerRoundNotInProgress(roundId, _status(roundId));
        }
        _end(roundId, current, RoundStatus.Abandoned, 0);
        emit RoundAbandoned(roundId);
    }

    // ------------------------------------------------------------------ participants

    /// @inheritdoc IFederatedLedger
    function submitUpdate(uint256 roundId, bytes32 updateHash, string calldata cid, uint64 numSamples) external {
        Participant memory p = _participants[msg.sender];
        if (!p.registered) revert FederatedLedgerNotRegistered(msg.sender);
        if (numSamples == 0) revert FederatedLedgerZeroSamples(msg.sender);
        if (numSamples > p.maxSamples) revert FederatedLedgerSampleCountAboveCap(msg.sender, numSamples, p.maxSamples);
        if (updateHash == bytes32(0)) revert FederatedLedgerEmptyHash();
        Current memory current = _current;
        if (!_isCurrent(roundId, current.nextRound) || current.status != RoundStatus.Open) {
            revert FederatedLedgerRoundNotOpen(roundId, _status(roundId));
        }
        if (block.timestamp > current.deadline) {
            revert FederatedLedgerDeadlinePassed(roundId, current.deadline, block.timestamp);
        }
        mapping(address participant => bytes32 updateHash) storage updates = _updates[roundId];
        if (updates[msg.sender] != bytes32(0)) revert FederatedLedgerAlreadySubmitted(roundId, msg.sender);

        updates[msg.sender] = updateHash;
        emit UpdateSubmitted(roundId, msg.sender, updateHash, cid, numSamples);
    }

    // ------------------------------------------------------------------ private rounds

    /// @inheritdoc IFederatedLedger
    function registerMaskingKey(bytes32 publicKey) external {
        if (!_participants[msg.sender].registered) revert FederatedLedgerNotRegistered(msg.sender);
        if (publicKey == bytes32(0)) revert FederatedLedgerEmptyHash();
        _maskingKeys[msg.sender] = publicKey;
        emit MaskingKeyRegistered(msg.sender, publicKey);
    }

    /// @inheritdoc IFederatedLedger
    function revealPairSeeds(uint256 roundId, address[] calldata others, bytes32[] calldata seeds) external {
        _checkReveal(roundId);
        if (others.length != seeds.length) revert FederatedLedgerRevealLengthMismatch(others.length, seeds.length);
        emit PairSeedsRevealed(roundId, msg.sender, others, seeds);
    }

    /// @inheritdoc IFederatedLedger
    function revealShares(uint256 roundId, address[] calldata owners, bytes32[] calldata shares) external {
        _checkReveal(roundId);
        if (owners.length != shares.length) revert FederatedLedgerRevealLengthMismatch(owners.length, shares.length);
        emit SharesRevealed(roundId, msg.sender, owners, shares);
    }

    /// @inheritdoc IFederatedLedger
    function getMaskingKey(address participant) external view returns (bytes32) {
        return _maskingKeys[participant];
    }

    /// @dev Reveals come from registered participants, into the current round while it is closed.
    function _checkReveal(uint256 roundId) private view {
        if (!_participants[msg.sender].registered) revert FederatedLedgerNotRegistered(msg.sender);
        Current memory current = _current;
        if (!_isCurrent(roundId, current.nextRound) || current.status != RoundStatus.Closed) {
            revert FederatedLedgerRoundNotClosed(roundId, _status(roundId));
        }
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IFederatedLedger
    function coordinator() external view returns (address) {
        return _coordinator;
    }

    /// @inheritdoc IFederatedLedger
    function genesisModelHash() external view returns (bytes32) {
        return _genesisModelHash;
    }

    /// @inheritdoc IFederatedLedger
    function manifestHash() external view returns (bytes32) {
        return _manifestHash;
    }

    /// @inheritdoc IFederatedLedger
    function deployedBlock() external view returns (uint256) {
        return _deployedBlock;
    }

    /// @inheritdoc IFederatedLedger
    function nextRound() external view returns (uint256) {
        return _current.nextRound;
    }

    /// @inheritdoc IFederatedLedger
    function lastAggregate() external view returns (bytes32) {
        return _lastAggregate;
    }

    /// @inheritdoc IFederatedLedger
    function getRound(uint256 roundId) external view returns (RoundInfo memory) {
        Current memory current = _current;
        if (roundId >= current.nextRound) {
            return RoundInfo(0, 0, 0, RoundStatus.NotOpened, 0, 0, 0);
        }
        if (_isCurrent(roundId, current.nextRound) && _inProgress(current.status)) {
            return RoundInfo({
                deadline: current.deadline,
                minUpdates: current.minUpdates,
                included: 0,
                status: current.status,
                openedBlock: current.openedBlock,
                closedBlock: current.closedBlock,
                endBlock: 0
            });
        }
        PastRound memory past = _rounds[roundId];
        return RoundInfo({
            deadline: past.deadline,
            minUpdates: past.minUpdates,
            included: past.included,
            status: past.status,
            openedBlock: past.openedBlock,
            closedBlock: past.closedBlock,
            endBlock: past.endBlock
        });
    }

    /// @inheritdoc IFederatedLedger
    function getUpdate(uint256 roundId, address participant) external view returns (bytes32) {
        return _updates[roundId][participant];
    }

    /// @inheritdoc IFederatedLedger
    function getParticipant(address participant) external view returns (bool registered, uint64 maxSamples) {
        Participant memory p = _participants[participant];
        return (p.registered, p.maxSamples);
    }

    /// @inheritdoc IFederatedLedger
    function participants() external view returns (address[] memory) {
        return _participantList;
    }

    // ------------------------------------------------------------------ internals

    /// @dev Write the ended round's own slot and mark the current slot ended.
    function _end(uint256 roundId, Current memory current, RoundStatus status, uint32 included) private {
        // Cannot truncate: block numbers stay below 2**40 (see openRound).
        _rounds[roundId] = PastRound({
            deadline: current.deadline,
            minUpdates: current.minUpdates,
            included: included,
            status: status,
            openedBlock: current.openedBlock,
            closedBlock: current.closedBlock,
            endBlock: uint40(block.number)
        });
        _current.status = status;
    }

    /// @dev Whether `roundId` is the last opened round (nextRound - 1), without underflow at nextRound 0.
    function _isCurrent(uint256 roundId, uint40 next) private pure returns (bool) {
        return next != 0 && roundId == uint256(next) - 1;
    }

    function _inProgress(RoundStatus status) private pure returns (bool) {
        return status == RoundStatus.Open || status == RoundStatus.Closed;
    }

    /// @dev The status of any round (only on revert paths and in views: it may read a second slot).
    function _status(uint256 roundId) private view returns (RoundStatus) {
        Current memory current = _current;
        if (roundId >= current.nextRound) return RoundStatus.NotOpened;
        if (_isCurrent(roundId, current.nextRound)) return current.status;
        return _rounds[roundId].status;
    }
}
