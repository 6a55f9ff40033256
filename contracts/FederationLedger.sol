// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title FederationLedger
/// @notice The audit trail of a federated-learning federation: which sites may contribute (and
/// how many samples each may claim), which model and which terms each round starts from, which
/// update every site committed to and then revealed (content hash + sample count), how the
/// aggregator valued each update, and which global model and explanation log closed the round.
/// Weights are computed here, from the valuation, so that no aggregator can aggregate with
/// weights that are not public.
/// @dev Submissions are commit-then-reveal, bound to the sender: before `commitDeadline` a site
/// posts `keccak256(abi.encode(site, round, updateSha256, numSamples))`; after it, the site
/// reveals CID, sha256 and sample count, which must open its own commitment. Nothing can be
/// copied before the commit window closes, and a copied reveal cannot open anyone else's
/// commitment. Commit order is the chain order of `UpdateCommitted` events (block number, log
/// index); it is not stored, to keep a submission within its gas budget.
///
/// CIDs live in event data only (`RoundOpened`, `UpdateSubmitted`, `RoundFinalized`). Every
/// content sha256 is in storage, so a CID read from an event is checked against state. The
/// sample count revealed in the open round waits in the site's own storage slot (already read
/// and written by the reveal) and moves to the submission when the round is valued or
/// cancelled: one fresh storage slot per submission instead of two.
///
/// Differential privacy: the coordinator may give a site an epsilon budget (micro-epsilon,
/// `EPSILON_SCALE` per unit of epsilon). A site reveals with {revealPrivateUpdate}, declaring
/// the epsilon the update spent; the site's cumulative spend (basic composition) is kept in its
/// record, is never reset (not by removal and re-registration either), and may not pass its
/// budget. The declared spend is not in the commitment: the update's DP parameters are inside
/// the update blob, which the commitment pins through its sha256, and an audit recomputes the
/// spend from them. Budget and cumulative spend are uint40 micro-epsilon beside the reveal's
/// own fields in the site's first storage slot, so a private reveal costs no extra slot: both
/// are capped at `MAX_PRIVACY_MICRO` (1,099,511.627775 epsilon, far above any epsilon that
/// still protects anyone), and a site's `maxSamples` at `MAX_SITE_SAMPLES` (2**48 - 1).
///
/// Peer rounds ({openPeerRound}): no aggregator scores the updates. After the reveal window
/// every site registered when the round opened is a validator: it scores every revealed update
/// (ascending site address order) on its own validation split, commits to its score vector
/// until `scoreCommitDeadline` ({commitScores}:
/// `keccak256(abi.encode(validator, round, scores, salt))`) and reveals it until
/// `scoreRevealDeadline` ({revealScores}). The vector itself lives in event data
/// (`ScoresRevealed`); storage keeps `keccak256(abi.encode(round, validator, scores))` in the
/// commitment's place, so anyone can replay the revealed vectors from events and
/// {recordPeerValuation} (callable by anyone once the score reveal window closed or every
/// validator revealed, with at least `quorum` votes) turns them into scores: a site's score is
/// the high median of the other validators' entries (its own never counts; the higher of the
/// two middle values for an even count, so a score is lowered only when more than half of the
/// entries are lower; 0 when nobody else scored it), reason Ok when positive and
/// PeerRejected otherwise, weights and site reputation by the rule of {recordValuation}. The
/// caller supplies the medians and the vectors packed (4 bytes an entry); the contract checks
/// each median by counting the entries below and at or below it, one pass over the vectors
/// whose cost no vote order or address choice can raise (a sort could be made quadratic). Only
/// validators that pass the reputation gate count in the medians: one already rated whose
/// validator reputation is below REPUTATION_GATE is left out when those that pass are a
/// majority of the revealed validators and at least the quorum; all count when those that
/// pass are fewer than half; otherwise (exactly half pass, or a majority below the quorum) the
/// round cannot be valued (`GateUndecided`) and is cancelled. Each validator is
/// rated by its distance to the medians (floor of the mean absolute difference over the sites
/// other than itself): `SCORE_SCALE - distance` is folded into its validator reputation with
/// the same EMA when it falls and a quarter of its factor when it rises; a validator that
/// committed a vector and did not reveal it is rated at distance SCORE_SCALE. `fedtrail.protocol.peers` is this rule in Python. A peer round refuses
/// {recordValuation}, and can be cancelled only after its score reveal deadline. Once valued,
/// an update it weighted that the aggregator cannot read back by the score reveal deadline
/// (its site may withhold the blob once scored) is dropped with reason Withheld and the other
/// weights re-derived ({dropWithheld}), so the round still finalizes; only when no weighted
/// update is left is the valued round cancelled ({cancelRound}). Under the round terms'
/// `valuation.public_screen` the aggregator drops, the same way, the weighted updates the
/// round's public free-rider screen marks, with reason FreeRider ({dropScreened}). Both kinds in
/// one round go in one call ({dropUpdates}: one re-weighting instead of two).
contract FederationLedger {
    // ------------------------------------------------------------------ types

    /// @notice Lifecycle of a round. `None` is the phase of a round that does not exist.
    enum Phase {
        None,
        Open,
        Valued,
        Finalized,
        Cancelled
    }

    /// @notice Why an update got its score. A score is positive exactly when the reason is Ok.
    /// `NotRevealed` names a commitment that was never revealed; such a site is not valued on
    /// chain (recordValuation lists revealed updates only), so the code is never posted here.
    /// `Contradicted` (appended after `NotRevealed`, so every older code keeps its number): the
    /// site signed a Flower reply that contradicts its on-chain submission; posted with score 0,
    /// and the signed reply is the evidence in the round's explanation log.
    /// `PeerRejected` (appended last): in a peer round the median of the other validators'
    /// scores was 0; only {recordPeerValuation} posts it.
    enum Reason {
        Ok,
        LowGain,
        OutlierDirection,
        OutlierNorm,
        Tampered,
        Malformed,
        Duplicate,
        Late,
        ExplanationShift,
        LowQuality,
        FreeRider,
        ImplausibleSamples,
        NotRevealed,
        Contradicted,
        PeerRejected,
        Withheld
    }

    /// @dev One storage slot: everything commit, reveal and the valuation checks read
    /// (`peer`: opened by {openPeerRound}, its scoring record in `_peerRounds`).
    struct Round {
        Phase phase;
        uint64 commitDeadline;
        uint64 revealDeadline;
        uint32 activeAtOpen;
        uint32 revealCount;
        uint48 openedAt;
        bool peer;
        bytes32 startSha256;
        bytes32 termsSha256;
        bytes32 globalSha256;
        bytes32 logSha256;
    }

    /// @dev Slot 0 (31 bytes) is read by every commit and reveal; the reveal writes its
    /// pending fields, and a private reveal its spend, in that one slot. Slot 1 is what only
    /// the valuation reads and writes (reputation and the count of valued rounds), and what peer
    /// scoring reads and writes for a validator (its validator reputation, the count of rounds
    /// it was rated in, and the last round it revealed scores in).
    struct Site {
        bool registered;
        uint32 activeFrom; // the first round the site may take part in
        uint32 pendingRound; // the round of the update revealed last (0: none)
        uint48 maxSamples; // at most MAX_SITE_SAMPLES
        uint48 pendingSamples; // that update's sample count until the round settles
        uint40 epsilonBudgetMicro; // 0: no budget (the spend is recorded, capped by the type)
        uint40 epsilonSpentMicro; // cumulative over every private reveal, never reset
        uint32 reputation; // slot 1
        uint32 valuedRounds;
        bool known;
        uint32 validatorReputation; // slot 1
        uint32 ratedRounds;
        uint32 scoredRound; // the last round whose scores the site revealed (0: none)
        string name;
    }

    /// @dev A peer round's scoring record, one slot (quorum 0: an aggregator round).
    struct PeerRound {
        uint64 scoreCommitDeadline;
        uint64 scoreRevealDeadline;
        uint32 quorum;
        uint32 commitCount;
        uint32 voteCount;
    }

    /// @notice A peer round's scoring record as returned by {getPeerRound} (all zero for an
    /// aggregator round).
    struct PeerRoundView {
        uint64 scoreCommitDeadline;
        uint64 scoreRevealDeadline;
        uint32 quorum;
        uint32 commitCount;
        uint32 voteCount;
    }

    /// @dev `hash` holds the commitment until the reveal and the update's sha256 after it.
    /// The second slot is written when the round is valued (or cancelled).
    struct Submission {
        bytes32 hash;
        uint64 numSamples;
        uint64 weight;
        uint32 score;
        Reason reason;
    }

    /// @notice A round as returned by {getRound}.
    struct RoundView {
        uint256 id;
        Phase phase;
        uint64 commitDeadline;
        uint64 revealDeadline;
        uint64 openedAt;
        uint32 activeAtOpen;
        uint32 revealCount;
        bytes32 startSha256;
        bytes32 termsSha256;
        bytes32 globalSha256;
        bytes32 logSha256;
    }

    /// @notice A submission as returned by {getSubmission} and {getSubmissions}. `sha256` and
    /// `numSamples` are zero until revealed; `commitment` is always the committed hash.
    struct SubmissionView {
        address site;
        bool revealed;
        bytes32 commitment;
        bytes32 sha256;
        uint64 numSamples;
        uint32 score;
        Reason reason;
        uint64 weight;
    }

    /// @notice A site as returned by {getSite} and {getSites}.
    struct SiteView {
        address site;
        bool registered;
        string name;
        uint32 reputation;
        uint32 valuedRounds;
        uint64 maxSamples;
        uint32 activeFrom;
    }

    // -------------------------------------------------------------- constants

    /// @notice Scores are fixed-point in [0, SCORE_SCALE].
    uint32 public constant SCORE_SCALE = 1_000_000;
    /// @notice Weights of a valued round are fixed-point and sum to exactly WEIGHT_SCALE.
    uint256 public constant WEIGHT_SCALE = 1e18;
    /// @notice Epsilon budgets and spends are integers in units of 1 / EPSILON_SCALE epsilon.
    uint64 public constant EPSILON_SCALE = 1_000_000;
    /// @notice The largest budget, and cumulative spend, a site's account holds: 2**40 - 1
    /// micro-epsilon, 1,099,511.627775 epsilon (a uint40, so the account shares the reveal's
    /// storage slot). Epsilon above a few tens already guarantees nothing meaningful.
    uint64 public constant MAX_PRIVACY_MICRO = type(uint40).max;
    /// @notice The largest `maxSamples` a site may be given: 2**48 - 1 (a uint48, for the same
    /// storage slot).
    uint64 public constant MAX_SITE_SAMPLES = type(uint48).max;
    /// @notice In a peer round, a validator already rated whose validator reputation is below
    /// REPUTATION_GATE fails the gate. When more than half of the revealed validators pass it
    /// and at least the round's quorum do, only they count in the medians (the others are
    /// still rated); when fewer than half pass, all count (the gate never leaves out a
    /// majority: a cartel that once won one and rated the others below the gate cannot keep
    /// the medians); when exactly half pass, or a majority below the quorum (a gated vote is no
    /// vote towards the quorum), {recordPeerValuation} reverts `GateUndecided`.
    uint32 public constant REPUTATION_GATE = 500_000;

    // ------------------------------------------------------------------ state

    uint32 private immutable _reputationAlpha;
    uint64 private immutable _minRoundWindow;
    address private _coordinator;
    address private _pendingCoordinator;
    address private _aggregator;
    uint256 private _currentRound;
    uint256 private _lastFinalizedRound;
    uint32 private _activeSiteCount;
    address[] private _allSites;
    mapping(address => Site) private _sites;
    mapping(uint256 => Round) private _rounds;
    mapping(uint256 => mapping(address => Submission)) private _submissions;
    mapping(uint256 => PeerRound) private _peerRounds;
    /// @dev A validator's score commitment, replaced by `keccak256(abi.encode(round,
    /// validator, scores))` when it reveals.
    mapping(uint256 => mapping(address => bytes32)) private _scoreVotes;

    // ----------------------------------------------------------------- events

    /// @notice A site was allowed to take part in rounds opened from now on.
    event SiteRegistered(address indexed site, string name, uint64 maxSamples);
    /// @notice A site may no longer commit or reveal; its history stays readable.
    event SiteRemoved(address indexed site);
    /// @notice The most samples a site may claim for one update changed.
    event MaxSamplesSet(address indexed site, uint64 maxSamples);
    /// @notice The account allowed to open, value and finalize rounds changed.
    event AggregatorChanged(address indexed previousAggregator, address indexed newAggregator);
    /// @notice The coordinator offered its role to `pendingCoordinator` (zero: offer withdrawn).
    event CoordinatorTransferStarted(
        address indexed coordinator, address indexed pendingCoordinator
    );
    /// @notice The coordinator role changed hands (from zero at deployment).
    event CoordinatorTransferred(
        address indexed previousCoordinator, address indexed newCoordinator
    );
    /// @notice A round opened from the given global model under the given terms.
    event RoundOpened(
        uint256 indexed round,
        string modelCid,
        bytes32 modelSha256,
        string termsCid,
        bytes32 termsSha256,
        uint64 commitDeadline,
        uint64 revealDeadline
    );
    /// @notice A site committed to its update for a round; the chain order of these events is
    /// the commit order.
    event UpdateCommitted(uint256 indexed round, address indexed site, bytes32 commitment);
    /// @notice A site revealed the update it committed to.
    event UpdateSubmitted(
        uint256 indexed round, address indexed site, string cid, bytes32 sha256, uint64 numSamples
    );
    /// @notice One site's valuation and the weight the contract derived from it.
    event UpdateValued(
        uint256 indexed round,
        address indexed site,
        uint32 score,
        Reason reason,
        uint64 weight,
        uint32 reputation
    );
    /// @notice All revealed updates of a round were valued; weights are fixed.
    event RoundValued(uint256 indexed round, uint256 totalWeightBasis);
    /// @notice A round closed with its global model and explanation log.
    event RoundFinalized(
        uint256 indexed round, string globalCid, bytes32 globalSha256, string logCid, bytes32 logSha256
    );
    /// @notice A round was abandoned without a new global model.
    event RoundCancelled(uint256 indexed round);
    /// @notice The aggregator could not read back `site`'s weighted update in valued peer round
    /// `round`: its score, reason and weight are now 0, Withheld and 0, and its reputation
    /// `reputation` (this round's credit taken back: see {dropWithheld}).
    event UpdateWithheld(uint256 indexed round, address indexed site, uint32 reputation);
    /// @notice The public screen of valued peer round `round` marks `site`'s weighted update
    /// (a free-rider): its score, reason and weight are now 0, FreeRider and 0, and its
    /// reputation `reputation` (this round's credit taken back: see {dropScreened}).
    event UpdateScreened(uint256 indexed round, address indexed site, uint32 reputation);
    /// @notice `site`'s weight in valued round `round` changed to `weight` (after
    /// {dropWithheld} or {dropScreened}). A site still weighted keeps its score, reason and
    /// reputation; a dropped site's weight is 0 and its score, reason and reputation are as its
    /// `UpdateWithheld` or `UpdateScreened` says.
    event UpdateReweighted(uint256 indexed round, address indexed site, uint64 weight);
    /// @notice The coordinator set `site`'s epsilon budget (0: no budget).
    event PrivacyBudgetSet(address indexed site, uint64 epsilonBudgetMicro);
    /// @notice `site`'s update in `round` spent `epsilonMicro`; `totalMicro` is its spend so far.
    event PrivacySpent(
        uint256 indexed round, address indexed site, uint64 epsilonMicro, uint64 totalMicro
    );

    /// @notice `round` is a peer round: validators score it between the two deadlines, and at
    /// least `quorum` revealed score vectors are needed to value it.
    event PeerScoringOpened(
        uint256 indexed round, uint64 scoreCommitDeadline, uint64 scoreRevealDeadline, uint32 quorum
    );
    /// @notice A validator committed to its score vector for a peer round.
    event ScoresCommitted(uint256 indexed round, address indexed validator, bytes32 commitment);
    /// @notice A validator revealed its score vector (entry i scores the i-th revealed update
    /// in ascending site address order).
    event ScoresRevealed(uint256 indexed round, address indexed validator, uint32[] scores);
    /// @notice A validator's distance to the round's median scores and its validator
    /// reputation after it.
    event ValidatorRated(
        uint256 indexed round, address indexed validator, uint32 distance, uint32 validatorReputation
    );

    // ----------------------------------------------------------------- errors

    error FederationLedger__NotCoordinator(address caller);
    error FederationLedger__NotPendingCoordinator(address caller);
    error FederationLedger__NotAggregator(address caller);
    error FederationLedger__ZeroAddress();
    error FederationLedger__InvalidParameter(string what);
    error FederationLedger__SiteAlreadyRegistered(address site);
    error FederationLedger__UnknownSite(address site);
    error FederationLedger__RegisteredAfterOpen(uint256 round, address site);
    error FederationLedger__UnknownRound(uint256 round);
    error FederationLedger__WrongPhase(uint256 round, Phase actual, Phase expected);
    error FederationLedger__PreviousRoundNotClosed(uint256 round);
    error FederationLedger__StartModelMismatch(bytes32 expected, bytes32 given);
    error FederationLedger__CommitWindowTooShort(uint64 commitSeconds, uint256 minimum);
    error FederationLedger__RevealWindowTooShort(uint64 revealSeconds, uint256 minimum);
    error FederationLedger__CommitClosed(uint256 round, uint64 commitDeadline);
    error FederationLedger__RevealNotOpen(uint256 round, uint64 commitDeadline);
    error FederationLedger__RevealClosed(uint256 round, uint64 revealDeadline);
    error FederationLedger__RoundStillOpen(uint256 round, uint64 revealDeadline);
    error FederationLedger__AlreadyCommitted(uint256 round, address site);
    error FederationLedger__NotCommitted(uint256 round, address site);
    error FederationLedger__AlreadyRevealed(uint256 round, address site);
    error FederationLedger__CommitmentMismatch(uint256 round, address site);
    error FederationLedger__TooManySamples(address site, uint64 numSamples, uint64 maxSamples);
    error FederationLedger__MaxSamplesTooLarge(address site, uint64 maxSamples, uint64 limit);
    error FederationLedger__LengthMismatch(uint256 sites, uint256 scores, uint256 reasons);
    error FederationLedger__SitesNotSorted(uint256 index);
    error FederationLedger__NotRevealed(uint256 round, address site);
    error FederationLedger__MissingScores(uint256 round, uint256 expected, uint256 given);
    error FederationLedger__ScoreOutOfRange(address site, uint32 score);
    error FederationLedger__InvalidReason(address site, uint8 reason);
    error FederationLedger__ScoreReasonMismatch(address site, uint32 score, uint8 reason);
    error FederationLedger__ZeroTotalWeight(uint256 round);
    error FederationLedger__PrivacyBudgetBelowSpent(address site, uint64 budget, uint64 spent);
    error FederationLedger__PrivacyBudgetTooLarge(address site, uint64 budget, uint64 limit);
    error FederationLedger__PrivacySpendRequired(address site);
    error FederationLedger__PrivacyBudgetExceeded(
        address site, uint64 spent, uint64 requested, uint64 budget
    );
    error FederationLedger__ScoreCommitWindowTooShort(uint64 scoreCommitSeconds, uint256 minimum);
    error FederationLedger__ScoreRevealWindowTooShort(uint64 scoreRevealSeconds, uint256 minimum);
    error FederationLedger__NotPeerRound(uint256 round);
    error FederationLedger__PeerRound(uint256 round);
    error FederationLedger__ScoringNotOpen(uint256 round, uint64 revealDeadline);
    error FederationLedger__ScoreCommitClosed(uint256 round, uint64 scoreCommitDeadline);
    error FederationLedger__ScoresAlreadyCommitted(uint256 round, address validator);
    error FederationLedger__ScoreRevealNotOpen(uint256 round, uint64 scoreCommitDeadline);
    error FederationLedger__ScoreRevealClosed(uint256 round, uint64 scoreRevealDeadline);
    error FederationLedger__ScoresNotCommitted(uint256 round, address validator);
    error FederationLedger__ScoresAlreadyRevealed(uint256 round, address validator);
    error FederationLedger__ScoreVectorLength(uint256 round, uint256 expected, uint256 given);
    error FederationLedger__ScoreCommitmentMismatch(uint256 round, address validator);
    error FederationLedger__ValidatorsNotSorted(uint256 index);
    error FederationLedger__MissingVotes(uint256 round, uint256 expected, uint256 given);
    error FederationLedger__VoteMismatch(uint256 round, address validator);
    error FederationLedger__QuorumNotMet(uint256 round, uint256 votes, uint256 quorum);
    /// @dev The reputation gate cannot fix the medians' validators (see REPUTATION_GATE):
    /// `passed` of the `votes` revealed validators pass it, exactly half, or a majority below
    /// the round's `quorum`. The round cannot be valued; the aggregator cancels it.
    error FederationLedger__GateUndecided(
        uint256 round, uint256 passed, uint256 votes, uint256 quorum
    );
    error FederationLedger__NotWeighted(uint256 round, address site);
    /// @dev {dropUpdates} was given `site` both as withheld and as screened: one drop per update.
    error FederationLedger__DroppedTwice(uint256 round, address site);
    error FederationLedger__WrongMedian(uint256 round, address site, uint32 supplied);

    // -------------------------------------------------------------- modifiers

    modifier onlyCoordinator() {
        if (msg.sender != _coordinator) revert FederationLedger__NotCoordinator(msg.sender);
        _;
    }

    modifier onlyAggregator() {
        if (msg.sender != _aggregator) revert FederationLedger__NotAggregator(msg.sender);
        _;
    }

    // ------------------------------------------------------------ constructor

    /// @param aggregator_ The account that runs rounds (may equal the deployer).
    /// @param reputationAlpha_ EMA factor for reputation, fixed-point in (0, SCORE_SCALE]:
    /// reputation' = (alpha * score + (SCORE_SCALE - alpha) * reputation) / SCORE_SCALE.
    /// @param minRoundWindow_ The shortest commit window and the shortest reveal window, in
    /// seconds, that {openRound} accepts (each window is at least one second regardless).
    ///
    /// Requirements:
    /// - `aggregator_` is not the zero address.
    /// - `reputationAlpha_` is in (0, SCORE_SCALE].
    constructor(address aggregator_, uint32 reputationAlpha_, uint64 minRoundWindow_) {
        if (aggregator_ == address(0)) revert FederationLedger__ZeroAddress();
        if (reputationAlpha_ == 0 || reputationAlpha_ > SCORE_SCALE) {
            revert FederationLedger__InvalidParameter("reputationAlpha");
        }
        _reputationAlpha = reputationAlpha_;
        _minRoundWindow = minRoundWindow_;
        _coordinator = msg.sender;
        emit CoordinatorTransferred(address(0), msg.sender);
        _aggregator = aggregator_;
        emit AggregatorChanged(address(0), aggregator_);
    }

    // ------------------------------------------------------- coordinator role

    /// @notice Allows `site` to take part in every round opened from now on (not in a round
    /// already open), claiming at most `maxSamples` samples per update.
    ///
    /// Requirements:
    /// - caller is the coordinator.
    /// - `site` is not the zero address and not currently registered.
    /// - `maxSamples` is positive and at most `MAX_SITE_SAMPLES`.
    function registerSite(address site, string calldata name, uint64 maxSamples)
        external
        onlyCoordinator
    {
        if (site == address(0)) revert FederationLedger__ZeroAddress();
        if (maxSamples == 0) revert FederationLedger__InvalidParameter("maxSamples");
        if (maxSamples > MAX_SITE_SAMPLES) {
            revert FederationLedger__MaxSamplesTooLarge(site, maxSamples, MAX_SITE_SAMPLES);
        }
        Site storage s = _sites[site];
        if (s.registered) revert FederationLedger__SiteAlreadyRegistered(site);
        if (!s.known) {
            s.known = true;
            _allSites.push(site);
        }
        s.registered = true;
        s.activeFrom = uint32(_currentRound + 1);
        s.maxSamples = uint48(maxSamples);
        s.name = name;
        _activeSiteCount += 1;
        emit SiteRegistered(site, name, maxSamples);
    }

    /// @notice Revokes `site`'s right to commit and reveal, in the open round too. Its past
    /// submissions and reputation stay. The open round keeps counting it among the sites
    /// active at open, so a removal never lets valuation start early.
    ///
    /// Requirements:
    /// - caller is the coordinator.
    /// - `site` is registered.
    function removeSite(address site) external onlyCoordinator {
        Site storage s = _sites[site];
        if (!s.registered) revert FederationLedger__UnknownSite(site);
        s.registered = false;
        _activeSiteCount -= 1;
        emit SiteRemoved(site);
    }

    /// @notice Sets the most samples `site` may claim for one update, from its next reveal on.
    ///
    /// Requirements:
    /// - caller is the coordinator.
    /// - `site` is registered and `maxSamples` is positive and at most `MAX_SITE_SAMPLES`.
    function setMaxSamples(address site, uint64 maxSamples) external onlyCoordinator {
        Site storage s = _sites[site];
        if (!s.registered) revert FederationLedger__UnknownSite(site);
        if (maxSamples == 0) revert FederationLedger__InvalidParameter("maxSamples");
        if (maxSamples > MAX_SITE_SAMPLES) {
            revert FederationLedger__MaxSamplesTooLarge(site, maxSamples, MAX_SITE_SAMPLES);
        }
        s.maxSamples = uint48(maxSamples);
        emit MaxSamplesSet(site, maxSamples);
    }

    /// @notice Sets `site`'s epsilon budget in micro-epsilon, from its next reveal on. With a
    /// budget the site must declare every update's spend ({revealPrivateUpdate}) and its
    /// cumulative spend may not pass the budget; 0 removes the budget. The spend itself is
    /// never reset, so a budget can be raised but never set below what was already spent.
    ///
    /// Requirements:
    /// - caller is the coordinator.
    /// - `site` is registered.
    /// - `epsilonBudgetMicro` is at least the site's spend so far (0 only while it spent 0).
    /// - `epsilonBudgetMicro` is at most `MAX_PRIVACY_MICRO` (1,099,511.627775 epsilon).
    function setPrivacyBudget(address site, uint64 epsilonBudgetMicro) external onlyCoordinator {
        Site storage s = _sites[site];
        if (!s.registered) revert FederationLedger__UnknownSite(site);
        if (epsilonBudgetMicro > MAX_PRIVACY_MICRO) {
            revert FederationLedger__PrivacyBudgetTooLarge(
                site, epsilonBudgetMicro, MAX_PRIVACY_MICRO
            );
        }
        uint64 spent = s.epsilonSpentMicro;
        if (epsilonBudgetMicro < spent) {
            revert FederationLedger__PrivacyBudgetBelowSpent(site, epsilonBudgetMicro, spent);
        }
        s.epsilonBudgetMicro = uint40(epsilonBudgetMicro);
        emit PrivacyBudgetSet(site, epsilonBudgetMicro);
    }

    /// @notice Hands the aggregator role to `newAggregator`.
    ///
    /// Requirements:
    /// - caller is the coordinator.
    /// - `newAggregator` is not the zero address.
    function setAggregator(address newAggregator) external onlyCoordinator {
        if (newAggregator == address(0)) revert FederationLedger__ZeroAddress();
        address previous = _aggregator;
        _aggregator = newAggregator;
        emit AggregatorChanged(previous, newAggregator);
    }

    /// @notice Offers the coordinator role to `newCoordinator`, who takes it with
    /// {acceptCoordinator}; the zero address withdraws a pending offer. Until accepted, the
    /// current coordinator keeps the role.
    ///
    /// Requirements:
    /// - caller is the coordinator.
    function transferCoordinator(address newCoordinator) external onlyCoordinator {
        _pendingCoordinator = newCoordinator;
        emit CoordinatorTransferStarted(msg.sender, newCoordinator);
    }

    /// @notice Takes the coordinator role offered to the caller.
    ///
    /// Requirements:
    /// - caller is the pending coordinator named by {transferCoordinator}.
    function acceptCoordinator() external {
        if (msg.sender != _pendingCoordinator) {
            revert FederationLedger__NotPendingCoordinator(msg.sender);
        }
        address previous = _coordinator;
        _coordinator = msg.sender;
        _pendingCoordinator = address(0);
        emit CoordinatorTransferred(previous, msg.sender);
    }

    // -------------------------------------------------------- aggregator role

    /// @notice Opens the next round, starting from the global model `modelCid` / `modelSha256`
    /// under the terms document `termsCid` / `termsSha256` (aggregation rule, valuation
    /// settings, validation-set hash: everything an audit replays). The contract sets the
    /// deadlines from this block: sites commit until `commitDeadline` = block.timestamp +
    /// `commitSeconds` and reveal after it until `revealDeadline` = `commitDeadline` +
    /// `revealSeconds` (both in RoundOpened), so the chain's windows are exactly the lengths
    /// given, however long the transaction waited to be mined. The sites registered now are
    /// the round's participants; their number is frozen as `activeAtOpen`.
    /// @return round The id of the new round (1 for the first).
    ///
    /// Requirements:
    /// - caller is the aggregator.
    /// - the previous round, if any, is Finalized or Cancelled.
    /// - both hashes are non-zero and both CIDs non-empty; after the first finalized round
    ///   `modelSha256` equals the last finalized global model's sha256.
    /// - `commitSeconds` and `revealSeconds` are each at least max(minRoundWindow, 1), and the
    ///   resulting deadlines fit a uint64.
    function openRound(
        string calldata modelCid,
        bytes32 modelSha256,
        string calldata termsCid,
        bytes32 termsSha256,
        uint64 commitSeconds,
        uint64 revealSeconds
    ) external onlyAggregator returns (uint256 round) {
        (round,) = _open(modelCid, modelSha256, termsCid, termsSha256, commitSeconds, revealSeconds);
    }

    /// @notice Opens the next round like {openRound}, as a peer round: no aggregator values
    /// it. After `revealDeadline` every site registered now scores every revealed update and
    /// commits to its score vector until `scoreCommitDeadline` = `revealDeadline` +
    /// `scoreCommitSeconds` ({commitScores}), then reveals it until `scoreRevealDeadline` =
    /// `scoreCommitDeadline` + `scoreRevealSeconds` ({revealScores}; both deadlines in
    /// PeerScoringOpened); {recordPeerValuation} turns at least `quorum` revealed vectors into
    /// scores and weights.
    /// @return round The id of the new round.
    ///
    /// Requirements:
    /// - every requirement of {openRound}.
    /// - `scoreCommitSeconds` and `scoreRevealSeconds` are each at least max(minRoundWindow, 1),
    ///   and the resulting deadlines fit a uint64.
    /// - `quorum` is in [1, the number of registered sites].
    function openPeerRound(
        string calldata modelCid,
        bytes32 modelSha256,
        string calldata termsCid,
        bytes32 termsSha256,
        uint64 commitSeconds,
        uint64 revealSeconds,
        uint64 scoreCommitSeconds,
        uint64 scoreRevealSeconds,
        uint32 quorum
    ) external onlyAggregator returns (uint256 round) {
        uint64 revealDeadline;
        (round, revealDeadline) =
            _open(modelCid, modelSha256, termsCid, termsSha256, commitSeconds, revealSeconds);
        _openPeer(round, revealDeadline, scoreCommitSeconds, scoreRevealSeconds, quorum);
    }

    /// @dev Every check and effect of {openRound}; emits RoundOpened. Returns the reveal
    /// deadline it set.
    function _open(
        string calldata modelCid,
        bytes32 modelSha256,
        string calldata termsCid,
        bytes32 termsSha256,
        uint64 commitSeconds,
        uint64 revealSeconds
    ) private returns (uint256 round, uint64 revealDeadline) {
        uint256 previous = _currentRound;
        if (previous != 0) {
            Phase p = _rounds[previous].phase;
            if (p != Phase.Finalized && p != Phase.Cancelled) {
                revert FederationLedger__PreviousRoundNotClosed(previous);
            }
        }
        if (modelSha256 == bytes32(0)) revert FederationLedger__InvalidParameter("modelSha256");
        if (bytes(modelCid).length == 0) revert FederationLedger__InvalidParameter("modelCid");
        if (termsSha256 == bytes32(0)) revert FederationLedger__InvalidParameter("termsSha256");
        if (bytes(termsCid).length == 0) revert FederationLedger__InvalidParameter("termsCid");
        uint256 finalized = _lastFinalizedRound;
        if (finalized != 0) {
            bytes32 expected = _rounds[finalized].globalSha256;
            if (expected != modelSha256) {
                revert FederationLedger__StartModelMismatch(expected, modelSha256);
            }
        }
        uint256 window = _minRoundWindow == 0 ? 1 : _minRoundWindow;
        if (commitSeconds < window) {
            revert FederationLedger__CommitWindowTooShort(commitSeconds, window);
        }
        if (revealSeconds < window) {
            revert FederationLedger__RevealWindowTooShort(revealSeconds, window);
        }
        uint256 commitEnd = block.timestamp + commitSeconds;
        uint256 revealEnd = commitEnd + revealSeconds;
        if (revealEnd > type(uint64).max) revert FederationLedger__InvalidParameter("window");
        uint64 commitDeadline = uint64(commitEnd);
        revealDeadline = uint64(revealEnd);
        round = previous + 1;
        if (round > type(uint32).max) revert FederationLedger__InvalidParameter("round");
        _currentRound = round;
        Round storage r = _rounds[round];
        r.phase = Phase.Open;
        r.commitDeadline = commitDeadline;
        r.revealDeadline = revealDeadline;
        r.activeAtOpen = _activeSiteCount;
        r.openedAt = uint48(block.timestamp);
        r.startSha256 = modelSha256;
        r.termsSha256 = termsSha256;
        emit RoundOpened(
            round, modelCid, modelSha256, termsCid, termsSha256, commitDeadline, revealDeadline
        );
    }

    /// @dev The peer part of {openPeerRound}, after {_open} (a revert undoes both).
    function _openPeer(
        uint256 round,
        uint64 revealDeadline,
        uint64 scoreCommitSeconds,
        uint64 scoreRevealSeconds,
        uint32 quorum
    ) private {
        uint256 window = _minRoundWindow == 0 ? 1 : _minRoundWindow;
        if (scoreCommitSeconds < window) {
            revert FederationLedger__ScoreCommitWindowTooShort(scoreCommitSeconds, window);
        }
        if (scoreRevealSeconds < window) {
            revert FederationLedger__ScoreRevealWindowTooShort(scoreRevealSeconds, window);
        }
        uint256 commitEnd = uint256(revealDeadline) + scoreCommitSeconds;
        uint256 revealEnd = commitEnd + scoreRevealSeconds;
        if (revealEnd > type(uint64).max) revert FederationLedger__InvalidParameter("window");
        uint64 scoreCommitDeadline = uint64(commitEnd);
        uint64 scoreRevealDeadline = uint64(revealEnd);
        if (quorum == 0 || quorum > _activeSiteCount) {
            revert FederationLedger__InvalidParameter("quorum");
        }
        _rounds[round].peer = true;
        PeerRound storage p = _peerRounds[round];
        p.scoreCommitDeadline = scoreCommitDeadline;
        p.scoreRevealDeadline = scoreRevealDeadline;
        p.quorum = quorum;
        emit PeerScoringOpened(round, scoreCommitDeadline, scoreRevealDeadline, quorum);
    }

    /// @notice Records one score and reason per revealed update and fixes the weights
    /// w_i = n_i * s_i / sum_j n_j * s_j as integers that sum to exactly WEIGHT_SCALE. The
    /// rounding remainder goes, one unit each, to the first sites (in address order) whose exact
    /// share had a fractional part, so every weight is within one unit of exact.
    ///
    /// Requirements:
    /// - caller is the aggregator.
    /// - the round is Open and not a peer round, and its reveal deadline passed or every site
    ///   active at open revealed.
    /// - `sites` is strictly ascending and lists exactly the sites that revealed (a commitment
    ///   never revealed is not valued).
    /// - `sites`, `scores`, `reasons` have equal lengths; every score is at most SCORE_SCALE;
    ///   every reason is a Reason other than NotRevealed; a score is positive exactly when
    ///   its reason is Ok.
    /// - at least one update has a non-zero weight basis.
    function recordValuation(
        uint256 round,
        address[] calldata sites,
        uint32[] calldata scores,
        uint8[] calldata reasons
    ) external onlyAggregator {
        Round storage r = _openRound(round);
        if (r.peer) revert FederationLedger__PeerRound(round);
        uint256 count = sites.length;
        if (scores.length != count || reasons.length != count) {
            revert FederationLedger__LengthMismatch(count, scores.length, reasons.length);
        }
        if (block.timestamp <= r.revealDeadline && r.revealCount < r.activeAtOpen) {
            revert FederationLedger__RoundStillOpen(round, r.revealDeadline);
        }
        if (count != r.revealCount) {
            revert FederationLedger__MissingScores(round, r.revealCount, count);
        }

        (uint256[] memory weights, uint256[] memory samples, uint256 total) =
            _computeWeights(round, sites, scores, reasons);
        r.phase = Phase.Valued;
        for (uint256 i = 0; i < count; ++i) {
            _applyValuation(
                round,
                sites[i],
                uint64(samples[i]),
                scores[i],
                Reason(reasons[i]),
                uint64(weights[i])
            );
        }
        emit RoundValued(round, total);
    }

    /// @notice Closes a valued round with its aggregated global model and explanation log.
    ///
    /// Requirements:
    /// - caller is the aggregator.
    /// - the round is Valued.
    /// - both hashes are non-zero and both CIDs non-empty.
    function finalizeRound(
        uint256 round,
        string calldata globalCid,
        bytes32 globalSha256,
        string calldata logCid,
        bytes32 logSha256
    ) external onlyAggregator {
        Round storage r = _rounds[round];
        if (r.phase == Phase.None) revert FederationLedger__UnknownRound(round);
        if (r.phase != Phase.Valued) {
            revert FederationLedger__WrongPhase(round, r.phase, Phase.Valued);
        }
        if (globalSha256 == bytes32(0)) revert FederationLedger__InvalidParameter("globalSha256");
        if (logSha256 == bytes32(0)) revert FederationLedger__InvalidParameter("logSha256");
        if (bytes(globalCid).length == 0) revert FederationLedger__InvalidParameter("globalCid");
        if (bytes(logCid).length == 0) revert FederationLedger__InvalidParameter("logCid");
        r.phase = Phase.Finalized;
        r.globalSha256 = globalSha256;
        r.logSha256 = logSha256;
        _lastFinalizedRound = round;
        emit RoundFinalized(round, globalCid, globalSha256, logCid, logSha256);
    }

    /// @notice Abandons an open round that cannot be valued (no usable update; a peer round
    /// below its quorum or undecided by the reputation gate), so the federation can open the
    /// next round from the last finalized model; or a valued peer round that cannot be
    /// finalized because an update its validators weighted cannot be read back (its site may
    /// withhold the blob once scored). The sample counts of its revealed updates,
    /// and a valued round's scores and weights, stay readable; `audit verify` checks that the
    /// cancellation was needed.
    ///
    /// Cancelling an open peer round rates every validator that committed a score vector and
    /// did not reveal it at distance SCORE_SCALE, as {recordPeerValuation} would have: pushing a
    /// round below its quorum by withholding costs reputation too.
    ///
    /// Requirements:
    /// - caller is the aggregator.
    /// - the round is Open, or Valued and a peer round.
    /// - its reveal deadline passed (in a peer round: its score reveal deadline).
    function cancelRound(uint256 round) external onlyAggregator {
        Round storage r = _rounds[round];
        if (!(r.peer && r.phase == Phase.Valued)) r = _openRound(round);
        uint64 deadline = r.peer ? _peerRounds[round].scoreRevealDeadline : r.revealDeadline;
        if (block.timestamp <= deadline) revert FederationLedger__RoundStillOpen(round, deadline);
        // an open peer round's withheld vectors are rated here (a valued one's already were)
        bool rateWithheld = r.peer && r.phase == Phase.Open;
        r.phase = Phase.Cancelled;
        uint256 all = _allSites.length;
        for (uint256 i = 0; i < all; ++i) {
            address site = _allSites[i];
            Site storage s = _sites[site];
            if (s.pendingRound == round) {
                _submissions[round][site].numSamples = s.pendingSamples;
            }
            if (
                rateWithheld && _scoreVotes[round][site] != bytes32(0)
                    && s.scoredRound != round
            ) {
                _rateValidator(round, site, SCORE_SCALE);
            }
        }
        emit RoundCancelled(round);
    }

    // -------------------------------------------------------------- site role

    /// @notice Commits the caller to its update for `round` without showing it:
    /// `commitment = keccak256(abi.encode(msg.sender, round, updateSha256, numSamples))`.
    ///
    /// Requirements:
    /// - caller is a registered site that was registered when the round opened.
    /// - the round is Open and its commit deadline has not passed.
    /// - the caller has not committed in this round; `commitment` is non-zero.
    function commitUpdate(uint256 round, bytes32 commitment) external {
        Site storage s = _sites[msg.sender];
        if (!s.registered) revert FederationLedger__UnknownSite(msg.sender);
        Round storage r = _openRound(round);
        if (s.activeFrom > round) revert FederationLedger__RegisteredAfterOpen(round, msg.sender);
        if (block.timestamp > r.commitDeadline) {
            revert FederationLedger__CommitClosed(round, r.commitDeadline);
        }
        if (commitment == bytes32(0)) revert FederationLedger__InvalidParameter("commitment");
        Submission storage sub = _submissions[round][msg.sender];
        if (sub.hash != bytes32(0)) revert FederationLedger__AlreadyCommitted(round, msg.sender);
        sub.hash = commitment;
        emit UpdateCommitted(round, msg.sender, commitment);
    }

    /// @notice Reveals the update the caller committed to: where it is (`cid`), its content
    /// sha256 and how many local samples trained it. Declares no privacy spend.
    ///
    /// Requirements:
    /// - caller is a registered site that was registered when the round opened.
    /// - the caller has no privacy budget (a site with one reveals with {revealPrivateUpdate}).
    /// - the round is Open, its commit deadline passed and its reveal deadline has not.
    /// - the caller committed in this round and has not revealed.
    /// - `updateSha256` non-zero, `cid` non-empty, `numSamples` in [1, the caller's maxSamples].
    /// - `keccak256(abi.encode(msg.sender, round, updateSha256, numSamples))` equals the
    ///   caller's commitment.
    function revealUpdate(
        uint256 round,
        string calldata cid,
        bytes32 updateSha256,
        uint64 numSamples
    ) external {
        _reveal(round, cid, updateSha256, numSamples, 0);
    }

    /// @notice Reveals like {revealUpdate} and charges the caller's privacy account with
    /// `epsilonMicro`, the epsilon this update spent (micro-epsilon), at the moment the update
    /// becomes public. The charge stays if the round is later cancelled.
    ///
    /// Requirements:
    /// - every requirement of {revealUpdate} except the one on the budget.
    /// - `epsilonMicro` is positive.
    /// - the caller's spend so far plus `epsilonMicro` is at most its budget, or, without a
    ///   budget, at most `MAX_PRIVACY_MICRO`.
    function revealPrivateUpdate(
        uint256 round,
        string calldata cid,
        bytes32 updateSha256,
        uint64 numSamples,
        uint64 epsilonMicro
    ) external {
        if (epsilonMicro == 0) revert FederationLedger__InvalidParameter("epsilonMicro");
        _reveal(round, cid, updateSha256, numSamples, epsilonMicro);
    }

    // --------------------------------------------------------- validator role

    /// @notice Commits the caller, a validator of peer round `round`, to its score vector
    /// without showing it: `commitment = keccak256(abi.encode(msg.sender, round, scores,
    /// salt))` with `scores` a uint32[] (entry i scores the i-th revealed update in ascending
    /// site address order) and `salt` a secret bytes32.
    ///
    /// Requirements:
    /// - caller is a registered site that was registered when the round opened.
    /// - the round is Open and a peer round.
    /// - its reveal deadline passed and its score commit deadline has not.
    /// - the caller has not committed scores in this round; `commitment` is non-zero.
    function commitScores(uint256 round, bytes32 commitment) external {
        (, PeerRound storage p) = _peerValidator(round);
        if (block.timestamp > p.scoreCommitDeadline) {
            revert FederationLedger__ScoreCommitClosed(round, p.scoreCommitDeadline);
        }
        if (commitment == bytes32(0)) revert FederationLedger__InvalidParameter("commitment");
        bytes32 slot = _scoreVotes[round][msg.sender];
        if (slot != bytes32(0)) revert FederationLedger__ScoresAlreadyCommitted(round, msg.sender);
        _scoreVotes[round][msg.sender] = commitment;
        p.commitCount += 1;
        emit ScoresCommitted(round, msg.sender, commitment);
    }

    /// @notice Reveals the score vector the caller committed to. Storage keeps
    /// `keccak256(abi.encode(round, msg.sender, scores))` in the commitment's place; the vector
    /// itself is in the `ScoresRevealed` event. An entry for the caller's own update is allowed
    /// and never counted.
    ///
    /// Requirements:
    /// - caller is a registered site that was registered when the round opened.
    /// - the round is Open and a peer round.
    /// - its score commit deadline passed and its score reveal deadline has not.
    /// - the caller committed scores in this round and has not revealed them.
    /// - `scores` has one entry per revealed update, each at most SCORE_SCALE.
    /// - `keccak256(abi.encode(msg.sender, round, scores, salt))` equals the commitment.
    function revealScores(uint256 round, uint32[] calldata scores, bytes32 salt) external {
        (Round storage r, PeerRound storage p) = _peerValidator(round);
        if (block.timestamp <= p.scoreCommitDeadline) {
            revert FederationLedger__ScoreRevealNotOpen(round, p.scoreCommitDeadline);
        }
        if (block.timestamp > p.scoreRevealDeadline) {
            revert FederationLedger__ScoreRevealClosed(round, p.scoreRevealDeadline);
        }
        bytes32 committed = _scoreVotes[round][msg.sender];
        if (committed == bytes32(0)) revert FederationLedger__ScoresNotCommitted(round, msg.sender);
        Site storage s = _sites[msg.sender];
        if (s.scoredRound == round) revert FederationLedger__ScoresAlreadyRevealed(round, msg.sender);
        uint256 count = scores.length;
        if (count != r.revealCount) {
            revert FederationLedger__ScoreVectorLength(round, r.revealCount, count);
        }
        (bytes32 opened, bytes32 stored, uint256 bad) = _scoreHashes(round, scores, salt);
        // an entry with dirty high bits is above SCORE_SCALE too; reading it reverts as the ABI
        // decoder does
        if (bad < count) revert FederationLedger__ScoreOutOfRange(msg.sender, scores[bad]);
        if (opened != committed) revert FederationLedger__ScoreCommitmentMismatch(round, msg.sender);
        _scoreVotes[round][msg.sender] = stored;
        s.scoredRound = uint32(round);
        p.voteCount += 1;
        _emitScoresRevealed(round, scores);
    }

    /// @notice Values peer round `round` from its revealed score vectors: every site's score is
    /// the high median of the other counted validators' entries for it (see the contract's
    /// notes and REPUTATION_GATE), its reason Ok when positive and PeerRejected otherwise;
    /// weights and site reputation follow as in {recordValuation}; every validator that scored
    /// a site other than itself is rated, and every one in `withheld` at distance SCORE_SCALE.
    /// The result is fixed by the chain (vectors, earlier ratings, commitments), so anyone may
    /// post it; the aggregator then calls {finalizeRound}.
    ///
    /// Requirements:
    /// - the round is Open and a peer round.
    /// - its score reveal deadline passed, or every site active at open revealed its scores.
    /// - at least `quorum` validators revealed; the reputation gate decides (see
    ///   REPUTATION_GATE: not exactly half of them pass it, nor a majority below `quorum`;
    ///   `GateUndecided` otherwise, and the aggregator cancels the round).
    /// - `sites` is strictly ascending and lists exactly the sites that revealed an update.
    /// - `validators` is strictly ascending and lists exactly the validators that revealed
    ///   scores, `vectors[j]` being the vector `validators[j]` revealed, packed: 4 bytes per
    ///   entry, big-endian, in site order (`abi.encodePacked` of its uint32 entries).
    /// - `medians[i]` is the high median of the counted other validators' entries for
    ///   `sites[i]` (0 when there are none): the contract checks it by counting, at most
    ///   floor(k/2) of the k entries below it and at least floor(k/2) + 1 at or below it
    ///   (`WrongMedian` otherwise), so its cost is linear in the entries and no entry order or
    ///   address choice can raise it.
    /// - `withheld` is strictly ascending and lists exactly the validators that committed scores
    ///   in this round and did not reveal them.
    /// - at least one update has a non-zero weight basis (otherwise the aggregator cancels).
    function recordPeerValuation(
        uint256 round,
        address[] calldata sites,
        address[] calldata validators,
        bytes[] calldata vectors,
        uint32[] calldata medians,
        address[] calldata withheld
    ) external {
        uint256 total = _valuePeers(round, sites, validators, vectors, medians);
        _rateWithheld(round, withheld);
        emit RoundValued(round, total);
    }

    /// @notice Drops from valued peer round `round` the weighted updates the aggregator could
    /// not read back by the score reveal deadline: each gets score 0, reason Withheld and weight
    /// 0, and the weights of the others are re-derived from their stored scores by the rule of
    /// {recordValuation} (`UpdateReweighted` for each weight that changed, the dropped ones'
    /// included); validator ratings stay as valued. A dropped site's reputation loses the credit
    /// this round's valuation gave it: `reputation - floor(alpha * median / SCORE_SCALE)` (at
    /// least 0), and 0 when this was its first valued round (the first score sets it). Without it a
    /// site could stall every peer round by withholding its blob once scored. `audit verify`
    /// checks that each dropped update is unreadable (`peers.withheld`).
    ///
    /// Requirements:
    /// - caller is the aggregator.
    /// - the round exists, is a peer round and is Valued; its score reveal deadline passed.
    /// - `sites` is strictly ascending and lists exactly the sites that revealed an update.
    /// - `dropped` is non-empty, strictly ascending, and each has a weight above 0.
    /// - an update with a weight above 0 is left (otherwise the aggregator cancels the round).
    function dropWithheld(uint256 round, address[] calldata sites, address[] calldata dropped)
        external
        onlyAggregator
    {
        _drop(round, sites, dropped, dropped[:0]);
    }

    /// @notice Drops from valued peer round `round` the weighted updates its public screen marks
    /// (round terms `valuation.public_screen`: the validators skip the free-rider screen, which
    /// reads no validation data, and the aggregator runs it once for the round on the public
    /// updates and references): each gets score 0, reason FreeRider and weight 0, and the
    /// weights of the others are re-derived as {dropWithheld} does (`UpdateReweighted` for each
    /// weight that changed), validator ratings staying as valued; a dropped site's reputation
    /// loses this round's credit as in {dropWithheld} (`UpdateScreened`). The contract cannot
    /// run the screen: `audit verify` recomputes it from chain and store and fails the round
    /// (`peers.screen`) when the dropped updates are not exactly the weighted ones it marks, so
    /// an aggregator that zeroes a rival's update, or spares an ally's, is named.
    ///
    /// Requirements:
    /// - caller is the aggregator.
    /// - the round exists, is a peer round and is Valued.
    /// - `sites` is strictly ascending and lists exactly the sites that revealed an update.
    /// - `dropped` is non-empty, strictly ascending, and each has a weight above 0.
    /// - an update with a weight above 0 is left (otherwise the aggregator cancels the round).
    function dropScreened(uint256 round, address[] calldata sites, address[] calldata dropped)
        external
        onlyAggregator
    {
        _drop(round, sites, dropped[:0], dropped);
    }

    /// @notice {dropWithheld} of `withheld` and {dropScreened} of `screened` in one call, with
    /// one re-weighting: the same events per dropped site (`UpdateWithheld` for each of
    /// `withheld`, then `UpdateScreened` for each of `screened`) and the same final state
    /// (scores, reasons, weights, reputations) as the two calls in that order, but one
    /// `UpdateReweighted` per weight that changed from the valuation's to the final one (two
    /// calls announce a weight that changed twice twice; the last one holds either way). A round
    /// in which some weighted updates cannot be read back by the score reveal deadline and the
    /// public screen marks others then costs one re-weighting of every update instead of two.
    ///
    /// Requirements:
    /// - caller is the aggregator.
    /// - the round exists, is a peer round and is Valued; when `withheld` is non-empty, its
    ///   score reveal deadline passed.
    /// - `sites` is strictly ascending and lists exactly the sites that revealed an update.
    /// - `withheld` and `screened` are not both empty; each is strictly ascending, and each
    ///   site in them has a weight above 0.
    /// - no site is in both `withheld` and `screened`.
    /// - an update with a weight above 0 is left (otherwise the aggregator cancels the round).
    function dropUpdates(
        uint256 round,
        address[] calldata sites,
        address[] calldata withheld,
        address[] calldata screened
    ) external onlyAggregator {
        _drop(round, sites, withheld, screened);
    }

    /// @dev All drops: `withheld` first (reason Withheld, `UpdateWithheld`), then `screened`
    /// (reason FreeRider, `UpdateScreened`), then one re-weighting. The re-weighting reads each
    /// site's submission slot only: a valued round stored every revealed update's sample count
    /// (at least 1) beside its score and weight, so a count of 0 is a site that revealed nothing
    /// here, and the site records are not read.
    function _drop(
        uint256 round,
        address[] calldata sites,
        address[] calldata withheld,
        address[] calldata screened
    ) private {
        Round storage r = _rounds[round];
        Phase phase = r.phase;
        if (phase == Phase.None) revert FederationLedger__UnknownRound(round);
        if (!r.peer) revert FederationLedger__NotPeerRound(round);
        if (phase != Phase.Valued) revert FederationLedger__WrongPhase(round, phase, Phase.Valued);
        if (withheld.length != 0) {
            uint64 deadline = _peerRounds[round].scoreRevealDeadline;
            if (block.timestamp <= deadline) revert FederationLedger__RoundStillOpen(round, deadline);
        }
        uint256 count = sites.length;
        if (count != r.revealCount) {
            revert FederationLedger__MissingScores(round, r.revealCount, count);
        }
        if (withheld.length == 0 && screened.length == 0) {
            revert FederationLedger__InvalidParameter("dropped");
        }
        mapping(address => Submission) storage subs = _submissions[round];
        _zero(round, subs, withheld, true);
        _zero(round, subs, screened, false);
        uint256[] memory products = new uint256[](count);
        uint256 total = 0;
        for (uint256 i = 0; i < count; ++i) {
            address site = sites[i];
            if (i > 0 && site <= sites[i - 1]) revert FederationLedger__SitesNotSorted(i);
            Submission storage sub = subs[site];
            uint256 samples = sub.numSamples;
            if (samples == 0) revert FederationLedger__NotRevealed(round, site);
            unchecked {
                // below 2**48 * 2**20 (samples at most MAX_SITE_SAMPLES), summed over fewer
                // than 2**32 sites: no overflow
                uint256 product = samples * sub.score;
                products[i] = product;
                total += product;
            }
        }
        uint256[] memory weights = _weights(round, products, total);
        for (uint256 i = 0; i < count; ++i) {
            Submission storage sub = subs[sites[i]];
            uint64 weight = uint64(weights[i]);
            if (sub.weight != weight) {
                sub.weight = weight;
                emit UpdateReweighted(round, sites[i], weight);
            }
        }
    }

    /// @dev Score 0 and reason Withheld (`withheld`) or FreeRider for each of `dropped`
    /// (strictly ascending, each weighted), its site's reputation less this round's credit, and
    /// its drop's event (`UpdateWithheld` or `UpdateScreened`). A weighted update has
    /// a positive score (a weight above 0 needs a positive product), so a weighted one whose
    /// score is already 0 was dropped earlier in the same call: listed as withheld and screened.
    function _zero(
        uint256 round,
        mapping(address => Submission) storage subs,
        address[] calldata dropped,
        bool withheld
    ) private {
        for (uint256 k = 0; k < dropped.length; ++k) {
            address site = dropped[k];
            if (k > 0 && site <= dropped[k - 1]) revert FederationLedger__SitesNotSorted(k);
            Submission storage sub = subs[site];
            if (sub.weight == 0) revert FederationLedger__NotWeighted(round, site);
            if (sub.score == 0) revert FederationLedger__DroppedTwice(round, site);
            Site storage s = _sites[site];
            uint32 credit = uint32((uint256(_reputationAlpha) * sub.score) / SCORE_SCALE);
            uint32 reputation = s.reputation;
            reputation = s.valuedRounds == 1 || credit >= reputation ? 0 : reputation - credit;
            s.reputation = reputation;
            sub.score = 0;
            sub.reason = withheld ? Reason.Withheld : Reason.FreeRider;
            if (withheld) {
                emit UpdateWithheld(round, site, reputation);
            } else {
                emit UpdateScreened(round, site, reputation);
            }
        }
    }

    // ------------------------------------------------------------------ views

    /// @notice Peer round `round`'s scoring record (all zero for an aggregator round); reverts
    /// for a round that does not exist.
    function getPeerRound(uint256 round) external view returns (PeerRoundView memory) {
        if (_rounds[round].phase == Phase.None) revert FederationLedger__UnknownRound(round);
        PeerRound storage p = _peerRounds[round];
        return PeerRoundView({
            scoreCommitDeadline: p.scoreCommitDeadline,
            scoreRevealDeadline: p.scoreRevealDeadline,
            quorum: p.quorum,
            commitCount: p.commitCount,
            voteCount: p.voteCount
        });
    }

    /// @notice `validator`'s score vote in `round`: its commitment until it reveals, then
    /// `keccak256(abi.encode(round, validator, scores))` (zero: no commitment). `revealed` is
    /// whether `round` is the last round the validator revealed scores in (what {revealScores}
    /// and {recordPeerValuation} check): it reads false for an earlier round, where the
    /// `ScoresRevealed` event is the record of the reveal and `stored` the hash of its vector.
    function scoreVote(uint256 round, address validator)
        external
        view
        returns (bytes32 stored, bool revealed)
    {
        stored = _scoreVotes[round][validator];
        revealed = stored != bytes32(0) && _sites[validator].scoredRound == round;
    }

    /// @notice `validator`'s validator reputation (EMA of its agreement with the medians, over
    /// SCORE_SCALE) and the number of peer rounds it was rated in.
    function validatorReputation(address validator)
        external
        view
        returns (uint32 reputation, uint32 ratedRounds)
    {
        Site storage s = _sites[validator];
        return (s.validatorReputation, s.ratedRounds);
    }

    /// @notice `site`'s privacy account in micro-epsilon: its budget (0: none) and its
    /// cumulative declared spend (all zero for an unknown address).
    function privacyAccount(address site)
        external
        view
        returns (uint64 epsilonBudgetMicro, uint64 epsilonSpentMicro)
    {
        Site storage s = _sites[site];
        return (s.epsilonBudgetMicro, s.epsilonSpentMicro);
    }

    /// @notice The account that manages sites, the aggregator role and its own succession.
    function coordinator() external view returns (address) {
        return _coordinator;
    }

    /// @notice The account offered the coordinator role (zero when none).
    function pendingCoordinator() external view returns (address) {
        return _pendingCoordinator;
    }

    /// @notice The account that opens, values and finalizes rounds.
    function aggregator() external view returns (address) {
        return _aggregator;
    }

    /// @notice The EMA factor of reputation, fixed-point over SCORE_SCALE.
    function reputationAlpha() external view returns (uint32) {
        return _reputationAlpha;
    }

    /// @notice The shortest commit and reveal windows {openRound} accepts, in seconds.
    function minRoundWindow() external view returns (uint64) {
        return _minRoundWindow;
    }

    /// @notice The id of the latest round (0 before the first).
    function currentRound() external view returns (uint256) {
        return _currentRound;
    }

    /// @notice The id of the latest finalized round (0 before the first).
    function lastFinalizedRound() external view returns (uint256) {
        return _lastFinalizedRound;
    }

    /// @notice The number of currently registered sites.
    function activeSiteCount() external view returns (uint32) {
        return _activeSiteCount;
    }

    /// @notice One round; reverts for a round that does not exist.
    function getRound(uint256 round) external view returns (RoundView memory) {
        Round storage r = _rounds[round];
        if (r.phase == Phase.None) revert FederationLedger__UnknownRound(round);
        return RoundView({
            id: round,
            phase: r.phase,
            commitDeadline: r.commitDeadline,
            revealDeadline: r.revealDeadline,
            openedAt: r.openedAt,
            activeAtOpen: r.activeAtOpen,
            revealCount: r.revealCount,
            startSha256: r.startSha256,
            termsSha256: r.termsSha256,
            globalSha256: r.globalSha256,
            logSha256: r.logSha256
        });
    }

    /// @notice `site`'s submission in `round` (all zero when it did not commit).
    function getSubmission(uint256 round, address site)
        external
        view
        returns (SubmissionView memory)
    {
        return _submissionView(round, site);
    }

    /// @notice Every commitment of `round`, revealed or not, ordered by site address.
    function getSubmissions(uint256 round) external view returns (SubmissionView[] memory out) {
        uint256 all = _allSites.length;
        SubmissionView[] memory found = new SubmissionView[](all);
        uint256 n = 0;
        for (uint256 i = 0; i < all; ++i) {
            address site = _allSites[i];
            if (_submissions[round][site].hash != bytes32(0)) {
                found[n] = _submissionView(round, site);
                ++n;
            }
        }
        out = new SubmissionView[](n);
        for (uint256 i = 0; i < n; ++i) {
            out[i] = found[i];
        }
        _sortByAddress(out);
    }

    /// @notice One site, registered or removed (all zero when never registered).
    function getSite(address site) external view returns (SiteView memory) {
        return _siteView(site);
    }

    /// @notice Every site ever registered, in registration order; `registered` tells which
    /// are active.
    function getSites() external view returns (SiteView[] memory out) {
        uint256 all = _allSites.length;
        out = new SiteView[](all);
        for (uint256 i = 0; i < all; ++i) {
            out[i] = _siteView(_allSites[i]);
        }
    }

    // -------------------------------------------------------------- internals

    function _openRound(uint256 round) private view returns (Round storage r) {
        r = _rounds[round];
        if (r.phase == Phase.None) revert FederationLedger__UnknownRound(round);
        if (r.phase != Phase.Open) revert FederationLedger__WrongPhase(round, r.phase, Phase.Open);
    }

    /// @dev Every reveal: `epsilonMicro` 0 is a plain reveal (refused for a site with a
    /// budget), otherwise the spend charged to the caller. Only a private reveal touches the
    /// epsilon spend (in slot 0, which every reveal writes); every check comes before the first
    /// state change.
    function _reveal(
        uint256 round,
        string calldata cid,
        bytes32 updateSha256,
        uint64 numSamples,
        uint64 epsilonMicro
    ) private {
        Site storage s = _sites[msg.sender];
        if (!s.registered) revert FederationLedger__UnknownSite(msg.sender);
        if (epsilonMicro == 0 && s.epsilonBudgetMicro != 0) {
            revert FederationLedger__PrivacySpendRequired(msg.sender);
        }
        Round storage r = _openRound(round);
        if (s.activeFrom > round) revert FederationLedger__RegisteredAfterOpen(round, msg.sender);
        if (block.timestamp <= r.commitDeadline) {
            revert FederationLedger__RevealNotOpen(round, r.commitDeadline);
        }
        if (block.timestamp > r.revealDeadline) {
            revert FederationLedger__RevealClosed(round, r.revealDeadline);
        }
        Submission storage sub = _submissions[round][msg.sender];
        bytes32 committed = sub.hash;
        if (committed == bytes32(0)) revert FederationLedger__NotCommitted(round, msg.sender);
        if (s.pendingRound == round) revert FederationLedger__AlreadyRevealed(round, msg.sender);
        if (updateSha256 == bytes32(0)) revert FederationLedger__InvalidParameter("sha256");
        if (bytes(cid).length == 0) revert FederationLedger__InvalidParameter("cid");
        if (numSamples == 0) revert FederationLedger__InvalidParameter("numSamples");
        if (numSamples > s.maxSamples) {
            revert FederationLedger__TooManySamples(msg.sender, numSamples, s.maxSamples);
        }
        if (keccak256(abi.encode(msg.sender, round, updateSha256, numSamples)) != committed) {
            revert FederationLedger__CommitmentMismatch(round, msg.sender);
        }
        uint64 total = 0;
        if (epsilonMicro != 0) {
            uint64 spent = s.epsilonSpentMicro;
            uint64 budget = s.epsilonBudgetMicro;
            // without a budget the cap is what the account holds: a revert, never a wrap or panic
            uint256 cap = budget == 0 ? MAX_PRIVACY_MICRO : budget;
            if (uint256(spent) + epsilonMicro > cap) {
                revert FederationLedger__PrivacyBudgetExceeded(
                    msg.sender, spent, epsilonMicro, uint64(cap)
                );
            }
            total = spent + epsilonMicro; // at most cap < 2**40: no overflow
            s.epsilonSpentMicro = uint40(total);
        }
        sub.hash = updateSha256;
        s.pendingRound = uint32(round);
        s.pendingSamples = uint48(numSamples); // at most maxSamples < 2**48
        r.revealCount += 1;
        emit UpdateSubmitted(round, msg.sender, cid, updateSha256, numSamples);
        if (epsilonMicro != 0) {
            emit PrivacySpent(round, msg.sender, epsilonMicro, total);
        }
    }

    /// @dev The caller as a validator of open peer round `round`, inside its scoring window.
    function _peerValidator(uint256 round)
        private
        view
        returns (Round storage r, PeerRound storage p)
    {
        Site storage s = _sites[msg.sender];
        if (!s.registered) revert FederationLedger__UnknownSite(msg.sender);
        r = _openRound(round);
        if (s.activeFrom > round) revert FederationLedger__RegisteredAfterOpen(round, msg.sender);
        if (!r.peer) revert FederationLedger__NotPeerRound(round);
        if (block.timestamp <= r.revealDeadline) {
            revert FederationLedger__ScoringNotOpen(round, r.revealDeadline);
        }
        p = _peerRounds[round];
    }

    /// @dev The checks of {recordPeerValuation} on the round and the list lengths.
    function _peerValuable(
        uint256 round,
        uint256 count,
        uint256 voters,
        uint256 vectors,
        uint256 medians
    ) private view returns (Round storage r) {
        r = _openRound(round);
        if (!r.peer) revert FederationLedger__NotPeerRound(round);
        PeerRound storage p = _peerRounds[round];
        uint256 votes = p.voteCount;
        if (block.timestamp <= p.scoreRevealDeadline && votes < r.activeAtOpen) {
            revert FederationLedger__RoundStillOpen(round, p.scoreRevealDeadline);
        }
        if (votes < p.quorum) revert FederationLedger__QuorumNotMet(round, votes, p.quorum);
        if (count != r.revealCount) {
            revert FederationLedger__MissingScores(round, r.revealCount, count);
        }
        if (medians != count) revert FederationLedger__MissingScores(round, count, medians);
        if (voters != votes) revert FederationLedger__MissingVotes(round, votes, voters);
        if (vectors != votes) revert FederationLedger__MissingVotes(round, votes, vectors);
    }

    /// @dev Each supplied median against its site's tally (k counted entries from the other
    /// validators): it is the high median, the entry at index floor(k/2) of the sorted
    /// entries, exactly when at most floor(k/2) entries are below it and at least
    /// floor(k/2) + 1 are at or below it; with no entry it is 0. Then the weights from the
    /// medians and every site's valuation (reason Ok for a positive median, PeerRejected for
    /// 0); the round becomes Valued. The sites were checked by {_siteOf}, which read `samples`.
    function _settlePeer(
        Round storage r,
        uint256 round,
        address[] calldata sites,
        uint32[] memory medians,
        uint256[] memory samples,
        uint256[] memory tally
    ) private returns (uint256 total) {
        uint256 count = medians.length;
        uint256[] memory products = new uint256[](count);
        for (uint256 i = 0; i < count; ++i) {
            uint256 t = tally[i];
            uint256 half = (t >> 128) / 2;
            uint32 m = medians[i];
            bool valid = t >> 128 == 0 ? m == 0 : uint64(t) <= half && uint64(t >> 64) > half;
            if (!valid) revert FederationLedger__WrongMedian(round, sites[i], m);
            unchecked {
                // below 2**48 * 2**20, summed over fewer than 2**32 sites: no overflow
                uint256 product = samples[i] * m;
                products[i] = product;
                total += product;
            }
        }
        uint256[] memory weights = _weights(round, products, total);
        r.phase = Phase.Valued;
        for (uint256 i = 0; i < count; ++i) {
            uint32 m = medians[i];
            _applyValuation(
                round,
                sites[i],
                uint64(samples[i]),
                m,
                m > 0 ? Reason.Ok : Reason.PeerRejected,
                uint64(weights[i])
            );
        }
    }

    /// @dev `keccak256(abi.encode(msg.sender, round, scores, salt))` (the commitment) and
    /// `keccak256(abi.encode(round, msg.sender, scores))` (what a reveal stores), from one
    /// copy of `scores` in memory, and the index of the first entry above SCORE_SCALE
    /// (`scores.length`: none). The hashes are used only when every entry is at most
    /// SCORE_SCALE, so every copied word is then the clean encoding of a uint32.
    function _scoreHashes(uint256 round, uint32[] calldata scores, bytes32 salt)
        private
        view
        returns (bytes32 opened, bytes32 stored, uint256 bad)
    {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            let size := mul(scores.length, 0x20)
            // [sender, round, 0x80, salt, length, entries...]
            mstore(ptr, caller())
            mstore(add(ptr, 0x20), round)
            mstore(add(ptr, 0x40), 0x80)
            mstore(add(ptr, 0x60), salt)
            mstore(add(ptr, 0x80), scores.length)
            calldatacopy(add(ptr, 0xa0), scores.offset, size)
            bad := scores.length
            for { let i := 0 } lt(i, scores.length) { i := add(i, 1) } {
                if gt(mload(add(add(ptr, 0xa0), shl(5, i))), SCORE_SCALE) {
                    bad := i
                    break
                }
            }
            opened := keccak256(ptr, add(0xa0, size))
            // [round, sender, 0x60, length, entries...] one word further on
            mstore(add(ptr, 0x20), round)
            mstore(add(ptr, 0x40), caller())
            mstore(add(ptr, 0x60), 0x60)
            stored := keccak256(add(ptr, 0x20), add(0x80, size))
        }
    }

    /// @dev `emit ScoresRevealed(round, msg.sender, scores)`, the data copied from calldata in
    /// one piece: every entry was checked to be at most SCORE_SCALE ({_scoreHashes}), so the
    /// words are already the ABI encoding and need no per-entry re-encoding.
    function _emitScoresRevealed(uint256 round, uint32[] calldata scores) private {
        bytes32 topic = ScoresRevealed.selector;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            let size := shl(5, scores.length)
            mstore(ptr, 0x20)
            mstore(add(ptr, 0x20), scores.length)
            calldatacopy(add(ptr, 0x40), scores.offset, size)
            log3(ptr, add(0x40, size), topic, round, caller())
        }
    }

    /// @dev Validators strictly ascending, each one that revealed scores in this round given
    /// with a packed vector of `count` entries; which of them the medians count (see
    /// REPUTATION_GATE). The gate reads the slot the reveal check just read.
    function _counted(
        uint256 round,
        uint256 count,
        address[] calldata validators,
        bytes[] calldata vectors
    ) private view returns (bool[] memory counted) {
        uint256 nv = validators.length;
        counted = new bool[](nv);
        uint256 passed = 0;
        for (uint256 j = 0; j < nv; ++j) {
            address v = validators[j];
            if (j > 0 && v <= validators[j - 1]) revert FederationLedger__ValidatorsNotSorted(j);
            Site storage s = _sites[v];
            if (s.scoredRound != round || vectors[j].length != count * 4) {
                revert FederationLedger__VoteMismatch(round, v);
            }
            if (s.ratedRounds == 0 || s.validatorReputation >= REPUTATION_GATE) {
                counted[j] = true;
                ++passed;
            }
        }
        if (passed * 2 > nv) {
            // a gated minority is left out, but a gated vote is no vote towards the quorum
            uint256 quorum = _peerRounds[round].quorum;
            if (passed < quorum) revert FederationLedger__GateUndecided(round, passed, nv, quorum);
        } else if (passed * 2 < nv) {
            // a gated majority counts again: the gate never hands the medians to a minority
            // (one that once won a majority and rated the others below the gate)
            for (uint256 j = 0; j < nv; ++j) {
                counted[j] = true;
            }
        } else {
            // exactly half pass: the chain cannot tell a caught cartel from a capturing one
            revert FederationLedger__GateUndecided(round, passed, nv, _peerRounds[round].quorum);
        }
    }

    /// @dev Sites strictly ascending, each with an update revealed in this round (checked here,
    /// before the medians), and each one's sample count; for every validator (index j) the
    /// index of the site with its address, `sites.length` when it has none: one merge walk
    /// over the two ascending lists.
    function _siteOf(uint256 round, address[] calldata sites, address[] calldata validators)
        private
        view
        returns (uint256[] memory siteOf, uint256[] memory samples)
    {
        uint256 count = sites.length;
        uint256 nv = validators.length;
        siteOf = new uint256[](nv);
        samples = new uint256[](count);
        uint256 j = 0;
        for (uint256 i = 0; i < count; ++i) {
            address site = sites[i];
            if (i > 0 && site <= sites[i - 1]) revert FederationLedger__SitesNotSorted(i);
            Site storage s = _sites[site];
            if (s.pendingRound != round) revert FederationLedger__NotRevealed(round, site);
            samples[i] = s.pendingSamples;
            while (j < nv && validators[j] < site) {
                siteOf[j] = count;
                ++j;
            }
            if (j < nv && validators[j] == site) {
                siteOf[j] = i;
                ++j;
            }
        }
        for (; j < nv; ++j) {
            siteOf[j] = count;
        }
    }

    /// @dev One validator's packed vector (`count * 4` bytes, checked by {_counted}) in one
    /// pass: checked against the hash its reveal stored, `keccak256(abi.encode(round,
    /// validator, scores))` rebuilt in `buf` (count + 4 words, reused for every vector); when
    /// the validator `counts`, each entry for a site other than its own (`self`; `count`:
    /// none) is added to that site's tally (bits 0-63: entries below the median, 64-127: at or
    /// below it, 128-191: entries). Returns the sum of |entry - median| over those sites. The
    /// same few operations per entry whatever the values: nothing is sorted or moved.
    function _scanVote(
        uint256 round,
        address validator,
        bytes calldata vector,
        uint32[] memory medians,
        uint256[] memory tally,
        bool counts,
        uint256 self,
        uint256[] memory buf
    ) private view returns (uint256 sum) {
        bytes32 digest;
        assembly ("memory-safe") {
            let count := mload(medians)
            let head := add(buf, 0x20)
            mstore(head, round)
            mstore(add(head, 0x20), validator)
            mstore(add(head, 0x40), 0x60)
            mstore(add(head, 0x60), count)
            let out := add(head, 0x80)
            let src := vector.offset
            let med := add(medians, 0x20)
            let tal := add(tally, 0x20)
            // every entry, its own site's included: that one is taken back after the loop
            for { let left := count } left { left := sub(left, 1) } {
                let e := shr(224, calldataload(src))
                mstore(out, e)
                let m := mload(med)
                let d := sub(e, m)
                if gt(m, e) { d := sub(m, e) }
                sum := add(sum, d)
                if counts {
                    let step := or(shl(128, 1), or(lt(e, m), shl(64, iszero(gt(e, m)))))
                    mstore(tal, add(mload(tal), step))
                }
                src := add(src, 4)
                out := add(out, 0x20)
                med := add(med, 0x20)
                tal := add(tal, 0x20)
            }
            if lt(self, count) {
                let at := shl(5, self)
                let e := mload(add(add(head, 0x80), at))
                let m := mload(add(add(medians, 0x20), at))
                let d := sub(e, m)
                if gt(m, e) { d := sub(m, e) }
                sum := sub(sum, d)
                if counts {
                    let slot := add(add(tally, 0x20), at)
                    let step := or(shl(128, 1), or(lt(e, m), shl(64, iszero(gt(e, m)))))
                    mstore(slot, sub(mload(slot), step))
                }
            }
            digest := keccak256(head, add(0x80, shl(5, count)))
        }
        if (digest != _scoreVotes[round][validator]) {
            revert FederationLedger__VoteMismatch(round, validator);
        }
    }

    /// @dev {recordPeerValuation} but the withheld vectors: checks, medians, weights and the
    /// rating of every revealed validator. Linear in the entries: one pass over the packed
    /// vectors checks each against its stored hash, tallies every supplied median's rank and
    /// sums each validator's distance; nothing is stored before every median is checked.
    function _valuePeers(
        uint256 round,
        address[] calldata sites,
        address[] calldata validators,
        bytes[] calldata vectors,
        uint32[] calldata medians
    ) private returns (uint256 total) {
        uint256 count = sites.length;
        uint256 nv = validators.length;
        Round storage r = _peerValuable(round, count, nv, vectors.length, medians.length);
        bool[] memory counted = _counted(round, count, validators, vectors);
        (uint256[] memory siteOf, uint256[] memory samples) = _siteOf(round, sites, validators);
        uint32[] memory scores = new uint32[](count);
        for (uint256 i = 0; i < count; ++i) {
            scores[i] = medians[i];
        }
        uint256[] memory tally = new uint256[](count);
        uint256[] memory sums = new uint256[](nv);
        uint256[] memory buf = new uint256[](count + 4);
        for (uint256 j = 0; j < nv; ++j) {
            sums[j] = _scanVote(
                round, validators[j], vectors[j], scores, tally, counted[j], siteOf[j], buf
            );
        }
        total = _settlePeer(r, round, sites, scores, samples, tally);
        _rateValidators(round, validators, sums, siteOf, count);
    }

    /// @dev Rates every validator that scored a site other than itself: distance = floor of
    /// the mean |entry - median| over those sites (`sums[j]` over `count` sites, less its own
    /// when it has one), folded into its validator reputation as `SCORE_SCALE - distance`
    /// with the reputation EMA.
    function _rateValidators(
        uint256 round,
        address[] calldata validators,
        uint256[] memory sums,
        uint256[] memory siteOf,
        uint256 count
    ) private {
        for (uint256 j = 0; j < validators.length; ++j) {
            uint256 n = siteOf[j] < count ? count - 1 : count;
            if (n != 0) _rateValidator(round, validators[j], uint32(sums[j] / n));
        }
    }

    /// @dev Rates every validator that committed scores and did not reveal them at distance
    /// SCORE_SCALE (agreement 0): a vector withheld after seeing the others' costs reputation.
    /// `withheld` must list exactly those validators, strictly ascending.
    function _rateWithheld(uint256 round, address[] calldata withheld) private {
        PeerRound storage p = _peerRounds[round];
        uint256 expected = p.commitCount - p.voteCount;
        if (withheld.length != expected) {
            revert FederationLedger__MissingVotes(round, expected, withheld.length);
        }
        for (uint256 j = 0; j < expected; ++j) {
            address w = withheld[j];
            if (j > 0 && w <= withheld[j - 1]) revert FederationLedger__ValidatorsNotSorted(j);
            if (_scoreVotes[round][w] == bytes32(0) || _sites[w].scoredRound == round) {
                revert FederationLedger__VoteMismatch(round, w);
            }
            _rateValidator(round, w, SCORE_SCALE);
        }
    }

    /// @dev Folds `SCORE_SCALE - distance` into `validator`'s validator reputation: the EMA of
    /// {_applyValuation} when it falls, a quarter of that factor when it rises (trust comes back
    /// four times slower than it goes, so a liar that agrees every other round stays below
    /// REPUTATION_GATE); the first rating sets it.
    function _rateValidator(uint256 round, address validator, uint32 distance) private {
        Site storage s = _sites[validator];
        uint32 agreement = SCORE_SCALE - distance;
        uint32 reputation = agreement;
        if (s.ratedRounds != 0) {
            uint256 old = s.validatorReputation;
            uint256 alpha = agreement < old ? _reputationAlpha : _reputationAlpha / 4;
            reputation = uint32(
                (alpha * agreement + (uint256(SCORE_SCALE) - alpha) * old) / SCORE_SCALE
            );
        }
        s.validatorReputation = reputation;
        s.ratedRounds += 1;
        emit ValidatorRated(round, validator, distance, reputation);
    }

    /// @dev Checks the aggregator's valuation (sites, scores, reasons) and fixes the weights.
    function _computeWeights(
        uint256 round,
        address[] calldata sites,
        uint32[] calldata scores,
        uint8[] calldata reasons
    )
        private
        view
        returns (uint256[] memory weights, uint256[] memory samples, uint256 total)
    {
        uint256 count = sites.length;
        uint256[] memory products = new uint256[](count);
        samples = new uint256[](count);
        for (uint256 i = 0; i < count; ++i) {
            address site = sites[i];
            if (i > 0 && site <= sites[i - 1]) revert FederationLedger__SitesNotSorted(i);
            Site storage s = _sites[site];
            if (s.pendingRound != round) revert FederationLedger__NotRevealed(round, site);
            uint32 score = scores[i];
            uint8 reason = reasons[i];
            if (score > SCORE_SCALE) revert FederationLedger__ScoreOutOfRange(site, score);
            if (reason == uint8(Reason.NotRevealed) || reason > uint8(Reason.Contradicted)) {
                revert FederationLedger__InvalidReason(site, reason);
            }
            if ((score > 0) != (reason == uint8(Reason.Ok))) {
                revert FederationLedger__ScoreReasonMismatch(site, score, reason);
            }
            uint256 n = s.pendingSamples;
            samples[i] = n;
            unchecked {
                // below 2**48 * 2**20, summed over fewer than 2**32 sites: no overflow
                products[i] = n * score;
                total += n * score;
            }
        }
        weights = _weights(round, products, total);
    }

    /// @dev w_i = floor(products[i] * WEIGHT_SCALE / total), then the rounding remainder one
    /// unit each to the first entries whose exact share had a fractional part.
    function _weights(uint256 round, uint256[] memory products, uint256 total)
        private
        pure
        returns (uint256[] memory weights)
    {
        if (total == 0) revert FederationLedger__ZeroTotalWeight(round);
        uint256 count = products.length;
        weights = new uint256[](count);
        uint256 assigned = 0;
        unchecked {
            // products[i] <= total < 2**100, so products[i] * WEIGHT_SCALE < 2**160; the floors
            // sum to at most WEIGHT_SCALE, and a unit goes to fewer entries than the remainder
            for (uint256 i = 0; i < count; ++i) {
                uint256 w = (products[i] * WEIGHT_SCALE) / total;
                weights[i] = w;
                assigned += w;
            }
            uint256 leftover = WEIGHT_SCALE - assigned;
            for (uint256 i = 0; i < count && leftover > 0; ++i) {
                if (mulmod(products[i], WEIGHT_SCALE, total) != 0) {
                    weights[i] += 1;
                    leftover -= 1;
                }
            }
        }
    }

    function _applyValuation(
        uint256 round,
        address site,
        uint64 numSamples,
        uint32 score,
        Reason reason,
        uint64 weight
    ) private {
        Submission storage sub = _submissions[round][site];
        // the second slot is empty until the valuation: all four fields in one store
        assembly ("memory-safe") {
            sstore(
                add(sub.slot, 1),
                or(
                    or(and(numSamples, 0xffffffffffffffff), shl(64, and(weight, 0xffffffffffffffff))),
                    or(shl(128, and(score, 0xffffffff)), shl(160, and(reason, 0xff)))
                )
            )
        }
        Site storage s = _sites[site];
        uint32 reputation = score;
        if (s.valuedRounds != 0) {
            uint256 alpha = _reputationAlpha;
            reputation = uint32(
                (alpha * score + (uint256(SCORE_SCALE) - alpha) * s.reputation) / SCORE_SCALE
            );
        }
        s.reputation = reputation;
        s.valuedRounds += 1;
        emit UpdateValued(round, site, score, reason, weight, reputation);
    }

    function _submissionView(uint256 round, address site)
        private
        view
        returns (SubmissionView memory v)
    {
        Submission storage sub = _submissions[round][site];
        bytes32 stored = sub.hash;
        if (stored == bytes32(0)) return v;
        v.site = site;
        uint64 samples = sub.numSamples;
        if (samples == 0) {
            Site storage s = _sites[site];
            if (s.pendingRound == round) samples = s.pendingSamples;
        }
        if (samples == 0) {
            v.commitment = stored;
            return v;
        }
        v.revealed = true;
        v.sha256 = stored;
        v.numSamples = samples;
        v.commitment = keccak256(abi.encode(site, round, stored, samples));
        v.score = sub.score;
        v.reason = sub.reason;
        v.weight = sub.weight;
    }

    function _siteView(address site) private view returns (SiteView memory v) {
        Site storage s = _sites[site];
        v.site = s.known ? site : address(0);
        v.registered = s.registered;
        v.name = s.name;
        v.reputation = s.reputation;
        v.valuedRounds = s.valuedRounds;
        v.maxSamples = s.maxSamples;
        v.activeFrom = s.activeFrom;
    }

    function _sortByAddress(SubmissionView[] memory items) private pure {
        for (uint256 i = 1; i < items.length; ++i) {
            SubmissionView memory key = items[i];
            uint256 j = i;
            while (j > 0 && items[j - 1].site > key.site) {
                items[j] = items[j - 1];
                --j;
            }
            items[j] = key;
        }
    }
}
