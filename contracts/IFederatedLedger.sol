// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title IFederatedLedger
/// @notice The audit trail of one federation: who may submit, what each round built on,
/// what every participant submitted and what the coordinator aggregated.
/// @dev Digests (sha256 of a blob's bytes) live in storage; CIDs, which only serve retrieval,
/// live in events and calldata. Round r builds on the last finalized aggregate (the genesis
/// model until a round is finalized). Protocol v2: a round is closed on chain before it is
/// aggregated, so nothing mined after the close changes what an honest aggregate contains.
interface IFederatedLedger {
    /// @notice A round's life: NotOpened -> Open -> Closed -> Finalized, or -> Abandoned from
    /// Open or Closed.
    enum RoundStatus {
        NotOpened,
        Open,
        Closed,
        Finalized,
        Abandoned
    }

    /// @notice The state of one round, readable without events.
    /// @param deadline Unix time after which no update is accepted.
    /// @param minUpdates Updates the coordinator needs to finalize before the deadline.
    /// @param included Updates the aggregate was computed from (set at finalization).
    /// @param status Where the round is in its life.
    /// @param openedBlock Block of `openRound`: a reader of the round's events starts here.
    /// @param closedBlock Block of `closeRound` (0 while open, and for a round abandoned while open).
    /// @param endBlock Block of `finalizeRound` or `abandonRound` (0 until then): a reader stops here.
    struct RoundInfo {
        uint64 deadline;
        uint32 minUpdates;
        uint32 included;
        RoundStatus status;
        uint64 openedBlock;
        uint64 closedBlock;
        uint64 endBlock;
    }

    // ------------------------------------------------------------------ events

    /// @notice The ledger was deployed with this coordinator, genesis model and federation manifest.
    event LedgerCreated(
        address indexed coordinator,
        bytes32 genesisModelHash,
        string genesisModelCid,
        bytes32 manifestHash,
        string manifestCid
    );

    /// @notice `participant` may now submit updates declaring at most `maxSamples` samples.
    event ParticipantRegistered(address indexed participant, uint64 maxSamples);

    /// @notice `participant` may no longer submit; its earlier records stay.
    event ParticipantRemoved(address indexed participant);

    /// @notice Round `roundId` was opened on the base model `baseModelHash`.
    event RoundOpened(
        uint256 indexed roundId, bytes32 baseModelHash, string baseModelCid, uint64 deadline, uint32 minUpdates
    );

    /// @notice `participant` recorded its update for round `roundId`.
    event UpdateSubmitted(
        uint256 indexed roundId, address indexed participant, bytes32 updateHash, string cid, uint64 numSamples
    );

    /// @notice Round `roundId` was closed: no further update can be recorded in it.
    event RoundClosed(uint256 indexed roundId);

    /// @notice Round `roundId` was finalized with the aggregate of the updates of `included`.
    event RoundFinalized(uint256 indexed roundId, bytes32 aggregateHash, string aggregateCid, address[] included);

    /// @notice Round `roundId` ended without an aggregate; the next round builds on the same base.
    event RoundAbandoned(uint256 indexed roundId);

    /// @notice `participant` published (or replaced) its masking public key (X25519) for private rounds.
    /// @dev A private round's roster is every registered participant whose key event precedes the round's
    /// `RoundOpened`; the key it uses is its last one before that event.
    event MaskingKeyRegistered(address indexed participant, bytes32 publicKey);

    /// @notice `participant` revealed, for the closed private round `roundId`, its pair seed with each of `others`.
    event PairSeedsRevealed(uint256 indexed roundId, address indexed participant, address[] others, bytes32[] seeds);

    /// @notice `participant` revealed, for the closed private round `roundId`, its Shamir share of each of
    /// `owners`' self-mask seeds (one word per owner: the two 16-byte shares of the seed's halves).
    event SharesRevealed(uint256 indexed roundId, address indexed participant, address[] owners, bytes32[] shares);

    // ------------------------------------------------------------------ errors

    /// @notice `account` is not the coordinator.
    error FederatedLedgerNotCoordinator(address account);
    /// @notice `account` is not a registered participant.
    error FederatedLedgerNotRegistered(address account);
    /// @notice `account` is already registered.
    error FederatedLedgerAlreadyRegistered(address account);
    /// @notice The zero address cannot be a participant.
    error FederatedLedgerInvalidParticipant(address account);
    /// @notice A sample cap or count of zero.
    error FederatedLedgerZeroSamples(address participant);
    /// @notice `participant` declared `numSamples`, above its registered cap `maxSamples`.
    error FederatedLedgerSampleCountAboveCap(address participant, uint64 numSamples, uint64 maxSamples);
    /// @notice `participant` already submitted an update for `roundId`.
    error FederatedLedgerAlreadySubmitted(uint256 roundId, address participant);
    /// @notice `roundId` is not open (its status is `status`).
    error FederatedLedgerRoundNotOpen(uint256 roundId, RoundStatus status);
    /// @notice `roundId` is not closed (its status is `status`): only a closed round is finalized.
    error FederatedLedgerRoundNotClosed(uint256 roundId, RoundStatus status);
    /// @notice `roundId` is neither open nor closed (its status is `status`): it cannot be abandoned.
    error FederatedLedgerRoundNotInProgress(uint256 roundId, RoundStatus status);
    /// @notice `roundId` closed for submissions at `deadline`; the block time is `timestamp`.
    error FederatedLedgerDeadlinePassed(uint256 roundId, uint64 deadline, uint256 timestamp);
    /// @notice The next round to open is `expected`, not `roundId`.
    error FederatedLedgerRoundOutOfSequence(uint256 expected, uint256 roundId);
    /// @notice Round `roundId` must build on `expected` (the last aggregate), not `actual`.
    error FederatedLedgerBaseModelMismatch(uint256 roundId, bytes32 expected, bytes32 actual);
    /// @notice A deadline `deadline` not after the block time `timestamp`.
    error FederatedLedgerInvalidDeadline(uint64 deadline, uint256 timestamp);
    /// @notice `minUpdates` of zero.
    error FederatedLedgerInvalidQuorum(uint32 minUpdates);
    /// @notice Finalizing `roundId` with `included` of `minUpdates` updates before its deadline `deadline`.
    error FederatedLedgerQuorumNotReached(uint256 roundId, uint256 included, uint32 minUpdates, uint64 deadline);
    /// @notice The aggregate includes `participant`, which recorded no update in `roundId`.
    error FederatedLedgerUpdateNotRecorded(uint256 roundId, address participant);
    /// @notice The included list is not in strictly ascending address order at `index`.
    error FederatedLedgerIncludedNotSorted(uint256 index, address participant);
    /// @notice Round `roundId` cannot open while round `roundId - 1` is `previousStatus` (not yet ended).
    error FederatedLedgerPreviousRoundNotEnded(uint256 roundId, RoundStatus previousStatus);
    /// @notice A digest of zero.
    error FederatedLedgerEmptyHash();
    /// @notice A reveal with `others` addresses and `seeds` words (they must be as many).
    error FederatedLedgerRevealLengthMismatch(uint256 others, uint256 seeds);

    // ------------------------------------------------------------------ coordinator

    /// @notice Allow `participant` to submit, declaring at most `maxSamples` samples per update.
    /// @dev Re-registering a removed participant is allowed and keeps its history.
    function registerParticipant(address participant, uint64 maxSamples) external;

    /// @notice Stop `participant` from submitting. Its recorded updates remain readable.
    function removeParticipant(address participant) external;

    /// @notice Open round `roundId` on the base model `baseModelHash` stored at `baseModelCid`.
    /// @dev `roundId` must be the next round and the previous round Finalized or Abandoned; the
    /// base must be `lastAggregate()`; `deadline` is a unix time in the future.
    function openRound(
        uint256 roundId,
        bytes32 baseModelHash,
        string calldata baseModelCid,
        uint64 deadline,
        uint32 minUpdates
    ) external;

    /// @notice Close the open round `roundId`: from this block on no update can be recorded in it.
    /// @dev The contract does not count submissions, so it cannot refuse a close below the
    /// quorum; the quorum is enforced by `finalizeRound`.
    function closeRound(uint256 roundId) external;

    /// @notice Record the aggregate of the closed round `roundId`, computed from the updates of `included`.
    /// @dev Allowed with at least `minUpdates` included updates, or with any number once the
    /// deadline passed. `included` must be in strictly ascending address order, each with a
    /// recorded update. Sets `lastAggregate()` to `aggregateHash`.
    function finalizeRound(
        uint256 roundId,
        bytes32 aggregateHash,
        string calldata aggregateCid,
        address[] calldata included
    ) external;

    /// @notice End the open or closed round `roundId` without an aggregate.
    /// @dev `lastAggregate()` is unchanged: the next round builds on the same base.
    function abandonRound(uint256 roundId) external;

    // ------------------------------------------------------------------ participants

    /// @notice Record the caller's update for the open round `roundId`.
    function submitUpdate(uint256 roundId, bytes32 updateHash, string calldata cid, uint64 numSamples) external;

    // ------------------------------------------------------------------ private rounds

    /// @notice Publish (or replace) the caller's masking public key; the caller must be a registered participant.
    function registerMaskingKey(bytes32 publicKey) external;

    /// @notice Reveal the caller's pair seeds with `others` for the closed round `roundId` (event only).
    function revealPairSeeds(uint256 roundId, address[] calldata others, bytes32[] calldata seeds) external;

    /// @notice Reveal the caller's shares of `owners`' self-mask seeds for the closed round `roundId` (event only).
    function revealShares(uint256 roundId, address[] calldata owners, bytes32[] calldata shares) external;

    /// @notice `participant`'s current masking public key, or 0 if it published none.
    function getMaskingKey(address participant) external view returns (bytes32);

    // ------------------------------------------------------------------ views

    /// @notice The coordinator, fixed at deployment.
    function coordinator() external view returns (address);

    /// @notice sha256 of the genesis model, fixed at deployment.
    function genesisModelHash() external view returns (bytes32);

    /// @notice sha256 of the federation manifest (the canonical JSON of every shared rule), fixed at deployment.
    function manifestHash() external view returns (bytes32);

    /// @notice The block the ledger was deployed in: history starts here.
    function deployedBlock() external view returns (uint256);

    /// @notice The next round to open (the number of rounds opened so far).
    function nextRound() external view returns (uint256);

    /// @notice The model the next round must build on: the last finalized aggregate, or the genesis model.
    function lastAggregate() external view returns (bytes32);

    /// @notice The state of round `roundId`.
    function getRound(uint256 roundId) external view returns (RoundInfo memory);

    /// @notice The digest `participant` recorded for `roundId`, or 0 if it recorded none.
    /// @dev The declared sample count is in the `UpdateSubmitted` event and, bound by this digest,
    /// in the blob's own header: storing it too would cost a second storage slot per update.
    function getUpdate(uint256 roundId, address participant) external view returns (bytes32 updateHash);

    /// @notice Whether `participant` may submit now, and its sample cap.
    function getParticipant(address participant) external view returns (bool registered, uint64 maxSamples);

    /// @notice Every address ever registered, in order of first registration.
    function participants() external view returns (address[] memory);
}
