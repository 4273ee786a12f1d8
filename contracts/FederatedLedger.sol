// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IFederatedLedger} from "./IFederatedLedger.sol";

/// @title FederatedLedger
/// @notice The on-chain audit trail of one federated training run. See {IFederatedLedger}.
/// @dev Storage per update is exactly one slot (its sha256 digest); per round, two slots.
/// Everything an auditor needs to fetch blobs (CIDs, sample counts, the included list) is in events,
/// and each round stores the blocks it was opened and finalized in, so a reader of one round's
/// events queries only that round's blocks.
contract FederatedLedger is IFederatedLedger {
    /// @dev One storage slot: 64 + 32 + 32 + 48 + 48 = 224 bits. The status is derived:
    /// opened iff openedBlock != 0, finalized iff finalizedBlock != 0.
    struct Round {
        uint64 deadline;
        uint32 minUpdates;
        uint32 included;
        uint48 openedBlock;
        uint48 finalizedBlock;
    }

    /// @dev One storage slot per participant, read once per submission.
    struct Participant {
        bool registered;
        bool known;
        uint64 maxSamples;
    }

    address private immutable _coordinator;
    bytes32 private immutable _genesisModelHash;
    uint256 private immutable _deployedBlock;

    /// @dev The next round to open, plus one. Kept non-zero from deployment on, so that opening
    /// round 0 rewrites a warm non-zero slot (~5,000 gas) instead of creating one (~22,100).
    uint256 private _nextRoundPlusOne = 1;
    address[] private _participantList;
    mapping(address account => Participant) private _participants;
    mapping(uint256 roundId => Round) private _rounds;
    mapping(uint256 roundId => bytes32 aggregateHash) private _aggregates;
    mapping(uint256 roundId => mapping(address participant => bytes32 updateHash)) private _updates;

    modifier onlyCoordinator() {
        if (msg.sender != _coordinator) revert FederatedLedgerNotCoordinator(msg.sender);
        _;
    }

    /// @param genesisModelHash_ sha256 of the model round 0 builds on.
    /// @param genesisModelCid Where that model is stored (emitted, not stored).
    constructor(bytes32 genesisModelHash_, string memory genesisModelCid) {
        if (genesisModelHash_ == bytes32(0)) revert FederatedLedgerEmptyHash();
        _coordinator = msg.sender;
        _genesisModelHash = genesisModelHash_;
        _deployedBlock = block.number;
        emit LedgerCreated(msg.sender, genesisModelHash_, genesisModelCid);
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
        uint256 expectedRound = _nextRoundPlusOne - 1;
        if (roundId != expectedRound) revert FederatedLedgerRoundOutOfSequence(expectedRound, roundId);
        if (roundId != 0 && _rounds[roundId - 1].finalizedBlock == 0) {
            revert FederatedLedgerPreviousRoundNotFinalized(roundId);
        }
        bytes32 expectedBase = roundId == 0 ? _genesisModelHash : _aggregates[roundId - 1];
        if (baseModelHash != expectedBase) revert FederatedLedgerBaseModelMismatch(roundId, expectedBase, baseModelHash);
        if (deadline <= block.timestamp) revert FederatedLedgerInvalidDeadline(deadline, block.timestamp);
        if (minUpdates == 0) revert FederatedLedgerInvalidQuorum(minUpdates);

        _rounds[roundId] = Round({
            deadline: deadline,
            minUpdates: minUpdates,
            included: 0,
            openedBlock: uint48(block.number),
            finalizedBlock: 0
        });
        // Cannot overflow: roundId == _nextRoundPlusOne - 1, and 2**256 - 2 rounds are impossible.
        unchecked {
            _nextRoundPlusOne = roundId + 2;
        }
        emit RoundOpened(roundId, baseModelHash, baseModelCid, deadline, minUpdates);
    }

    /// @inheritdoc IFederatedLedger
    function finalizeRound(
        uint256 roundId,
        bytes32 aggregateHash,
        string calldata aggregateCid,
        address[] calldata included
    ) external onlyCoordinator {
        Round storage round = _rounds[roundId];
        if (round.openedBlock == 0 || round.finalizedBlock != 0) {
            revert FederatedLedgerRoundNotOpen(roundId, _status(round));
        }
        if (aggregateHash == bytes32(0)) revert FederatedLedgerEmptyHash();
        uint256 count = included.length;
        if (count < round.minUpdates && block.timestamp <= round.deadline) {
            revert FederatedLedgerQuorumNotReached(roundId, count, round.minUpdates, round.deadline);
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
        // Cannot truncate: the included participants are distinct registered accounts, far fewer
        // than 2**32 (each costs a registration transaction).
        round.included = uint32(count);
        round.finalizedBlock = uint48(block.number);
        _aggregates[roundId] = aggregateHash;
        emit RoundFinalized(roundId, aggregateHash, aggregateCid, included);
    }

    // ------------------------------------------------------------------ participants

    /// @inheritdoc IFederatedLedger
    function submitUpdate(uint256 roundId, bytes32 updateHash, string calldata cid, uint64 numSamples) external {
        Participant memory p = _participants[msg.sender];
        if (!p.registered) revert FederatedLedgerNotRegistered(msg.sender);
        if (numSamples == 0) revert FederatedLedgerZeroSamples(msg.sender);
        if (numSamples > p.maxSamples) revert FederatedLedgerSampleCountAboveCap(msg.sender, numSamples, p.maxSamples);
        if (updateHash == bytes32(0)) revert FederatedLedgerEmptyHash();
        Round storage round = _rounds[roundId];
        if (round.openedBlock == 0 || round.finalizedBlock != 0) {
            revert FederatedLedgerRoundNotOpen(roundId, _status(round));
        }
        if (block.timestamp > round.deadline) {
            revert FederatedLedgerDeadlinePassed(roundId, round.deadline, block.timestamp);
        }
        mapping(address participant => bytes32 updateHash) storage updates = _updates[roundId];
        if (updates[msg.sender] != bytes32(0)) revert FederatedLedgerAlreadySubmitted(roundId, msg.sender);

        updates[msg.sender] = updateHash;
        emit UpdateSubmitted(roundId, msg.sender, updateHash, cid, numSamples);
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
    function deployedBlock() external view returns (uint256) {
        return _deployedBlock;
    }

    /// @inheritdoc IFederatedLedger
    function nextRound() external view returns (uint256) {
        return _nextRoundPlusOne - 1;
    }

    /// @inheritdoc IFederatedLedger
    function expectedBaseModel(uint256 roundId) external view returns (bytes32) {
        return roundId == 0 ? _genesisModelHash : _aggregates[roundId - 1];
    }

    /// @inheritdoc IFederatedLedger
    function getRound(uint256 roundId) external view returns (RoundInfo memory) {
        Round memory round = _rounds[roundId];
        return RoundInfo({
            deadline: round.deadline,
            minUpdates: round.minUpdates,
            included: round.included,
            status: _status(round),
            openedBlock: round.openedBlock,
            finalizedBlock: round.finalizedBlock,
            aggregateHash: _aggregates[roundId]
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

    function _status(Round memory round) private pure returns (RoundStatus) {
        if (round.finalizedBlock != 0) return RoundStatus.Finalized;
        if (round.openedBlock != 0) return RoundStatus.Open;
        return RoundStatus.NotOpened;
    }
}
