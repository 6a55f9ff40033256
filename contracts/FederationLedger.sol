// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title FederationLedger
/// @notice The audit trail of a federated-learning federation: which sites may contribute, which
/// model each round starts from, which update every site submitted (content hash + sample count),
/// how the aggregator valued each update, and which global model and explanation log closed the
/// round. Weights are computed here, from the valuation, so that no aggregator can aggregate with
/// weights that are not public.
/// @dev CIDs live in event data only (`RoundOpened`, `UpdateSubmitted`, `RoundFinalized`): storing
/// them would double the cost of a submission. Every content sha256 is in storage, so a CID read
/// from an event is checked against state.
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

    struct Round {
        uint64 deadline;
        uint64 openedAt;
        uint32 submissionCount;
        Phase phase;
        bytes32 startSha256;
        bytes32 globalSha256;
        bytes32 logSha256;
    }

    struct Site {
        bool registered;
        bool known;
        uint32 reputation;
        uint32 valuedRounds;
        string name;
    }

    struct Submission {
        bytes32 sha256;
        uint64 weight;
        uint32 score;
        uint8 reason;
    }

    struct HashEntry {
        address site;
        uint64 numSamples;
    }

    /// @notice A round as returned by {getRound}.
    struct RoundView {
        uint256 id;
        Phase phase;
        uint64 deadline;
        uint64 openedAt;
        uint32 submissionCount;
        bytes32 startSha256;
        bytes32 globalSha256;
        bytes32 logSha256;
    }

    /// @notice A submission as returned by {getSubmission} and {getSubmissions}.
    struct SubmissionView {
        address site;
        bytes32 sha256;
        uint64 numSamples;
        uint32 score;
        uint8 reason;
        uint64 weight;
    }

    /// @notice A site as returned by {getSite} and {getSites}.
    struct SiteView {
        address site;
        bool registered;
        string name;
        uint32 reputation;
        uint32 valuedRounds;
    }

    // -------------------------------------------------------------- constants

    /// @notice Scores are fixed-point in [0, SCORE_SCALE].
    uint32 public constant SCORE_SCALE = 1_000_000;
    /// @notice Weights of a valued round are fixed-point and sum to exactly WEIGHT_SCALE.
    uint256 public constant WEIGHT_SCALE = 1e18;

    // ------------------------------------------------------------------ state

    address private immutable _coordinator;
    uint32 private immutable _reputationAlpha;
    address private _aggregator;
    uint256 private _currentRound;
    uint256 private _lastFinalizedRound;
    uint32 private _activeSiteCount;
    address[] private _allSites;
    mapping(address => Site) private _sites;
    mapping(uint256 => Round) private _rounds;
    mapping(uint256 => mapping(address => Submission)) private _submissions;
    mapping(uint256 => mapping(bytes32 => HashEntry)) private _byHash;

    // ----------------------------------------------------------------- events

    /// @notice A site was allowed to submit updates.
    event SiteRegistered(address indexed site, string name);
    /// @notice A site may no longer submit updates; its history stays readable.
    event SiteRemoved(address indexed site);
    /// @notice The account allowed to open, value and finalize rounds changed.
    event AggregatorChanged(address indexed previousAggregator, address indexed newAggregator);
    /// @notice A round opened from the given global model.
    event RoundOpened(uint256 indexed round, string modelCid, bytes32 modelSha256, uint64 deadline);
    /// @notice A site submitted its update for a round.
    event UpdateSubmitted(
        uint256 indexed round, address indexed site, string cid, bytes32 sha256, uint64 numSamples
    );
    /// @notice One site's valuation and the weight the contract derived from it.
    event UpdateValued(
        uint256 indexed round,
        address indexed site,
        uint32 score,
        uint8 reason,
        uint64 weight,
        uint32 reputation
    );
    /// @notice All updates of a round were valued; weights are fixed.
    event RoundValued(uint256 indexed round, uint256 totalWeightBasis);
    /// @notice A round closed with its global model and explanation log.
    event RoundFinalized(
        uint256 indexed round, string globalCid, bytes32 globalSha256, string logCid, bytes32 logSha256
    );
    /// @notice A round was abandoned without a new global model.
    event RoundCancelled(uint256 indexed round);

    // ----------------------------------------------------------------- errors

    error FederationLedger__NotCoordinator(address caller);
    error FederationLedger__NotAggregator(address caller);
    error FederationLedger__ZeroAddress();
    error FederationLedger__InvalidParameter(string what);
    error FederationLedger__SiteAlreadyRegistered(address site);
    error FederationLedger__UnknownSite(address site);
    error FederationLedger__UnknownRound(uint256 round);
    error FederationLedger__WrongPhase(uint256 round, Phase actual, Phase expected);
    error FederationLedger__PreviousRoundNotClosed(uint256 round);
    error FederationLedger__StartModelMismatch(bytes32 expected, bytes32 given);
    error FederationLedger__DeadlineInPast(uint64 deadline, uint64 nowTimestamp);
    error FederationLedger__DeadlinePassed(uint256 round, uint64 deadline);
    error FederationLedger__RoundStillOpen(uint256 round, uint64 deadline);
    error FederationLedger__AlreadySubmitted(uint256 round, address site);
    error FederationLedger__DuplicateUpdate(uint256 round, bytes32 sha256, address firstSubmitter);
    error FederationLedger__LengthMismatch(uint256 sites, uint256 scores, uint256 reasons);
    error FederationLedger__SitesNotSorted(uint256 index);
    error FederationLedger__NotSubmitted(uint256 round, address site);
    error FederationLedger__MissingScores(uint256 round, uint256 expected, uint256 given);
    error FederationLedger__ScoreOutOfRange(address site, uint32 score);
    error FederationLedger__ZeroTotalWeight(uint256 round);

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
    ///
    /// Requirements:
    /// - `aggregator_` is not the zero address.
    /// - `reputationAlpha_` is in (0, SCORE_SCALE].
    constructor(address aggregator_, uint32 reputationAlpha_) {
        if (aggregator_ == address(0)) revert FederationLedger__ZeroAddress();
        if (reputationAlpha_ == 0 || reputationAlpha_ > SCORE_SCALE) {
            revert FederationLedger__InvalidParameter("reputationAlpha");
        }
        _coordinator = msg.sender;
        _reputationAlpha = reputationAlpha_;
        _aggregator = aggregator_;
        emit AggregatorChanged(address(0), aggregator_);
    }

    // ------------------------------------------------------- coordinator role

    /// @notice Allows `site` to submit updates from the next submission on.
    ///
    /// Requirements:
    /// - caller is the coordinator.
    /// - `site` is not the zero address and not currently registered.
    function registerSite(address site, string calldata name) external onlyCoordinator {
        if (site == address(0)) revert FederationLedger__ZeroAddress();
        Site storage s = _sites[site];
        if (s.registered) revert FederationLedger__SiteAlreadyRegistered(site);
        if (!s.known) {
            s.known = true;
            _allSites.push(site);
        }
        s.registered = true;
        s.name = name;
        _activeSiteCount += 1;
        emit SiteRegistered(site, name);
    }

    /// @notice Revokes `site`'s right to submit. Its past submissions and reputation stay.
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

    // -------------------------------------------------------- aggregator role

    /// @notice Opens the next round, starting from the global model `modelCid` / `modelSha256`.
    /// @return round The id of the new round (1 for the first).
    ///
    /// Requirements:
    /// - caller is the aggregator.
    /// - the previous round, if any, is Finalized or Cancelled.
    /// - `modelSha256` is non-zero, `modelCid` non-empty, and after the first finalized round
    ///   `modelSha256` equals the last finalized global model's sha256.
    /// - `deadline` is in the future.
    function openRound(string calldata modelCid, bytes32 modelSha256, uint64 deadline)
        external
        onlyAggregator
        returns (uint256 round)
    {
        uint256 previous = _currentRound;
        if (previous != 0) {
            Phase p = _rounds[previous].phase;
            if (p != Phase.Finalized && p != Phase.Cancelled) {
                revert FederationLedger__PreviousRoundNotClosed(previous);
            }
        }
        if (modelSha256 == bytes32(0)) revert FederationLedger__InvalidParameter("modelSha256");
        if (bytes(modelCid).length == 0) revert FederationLedger__InvalidParameter("modelCid");
        uint256 finalized = _lastFinalizedRound;
        if (finalized != 0) {
            bytes32 expected = _rounds[finalized].globalSha256;
            if (expected != modelSha256) {
                revert FederationLedger__StartModelMismatch(expected, modelSha256);
            }
        }
        if (deadline <= block.timestamp) {
            revert FederationLedger__DeadlineInPast(deadline, uint64(block.timestamp));
        }
        round = previous + 1;
        _currentRound = round;
        Round storage r = _rounds[round];
        r.phase = Phase.Open;
        r.deadline = deadline;
        r.openedAt = uint64(block.timestamp);
        r.startSha256 = modelSha256;
        emit RoundOpened(round, modelCid, modelSha256, deadline);
    }

    /// @notice Records one score per submitted update and fixes the weights
    /// w_i = n_i * s_i / sum_j n_j * s_j as integers that sum to exactly WEIGHT_SCALE. The
    /// rounding remainder goes, one unit each, to the first sites (in address order) whose exact
    /// share had a fractional part, so every weight is within one unit of exact.
    ///
    /// Requirements:
    /// - caller is the aggregator.
    /// - the round is Open, and its deadline passed or every registered site submitted.
    /// - `sites` is strictly ascending, and lists exactly the sites that submitted.
    /// - `sites`, `scores`, `reasons` have equal lengths; every score is at most SCORE_SCALE.
    /// - at least one update has a non-zero score.
    function recordValuation(
        uint256 round,
        address[] calldata sites,
        uint32[] calldata scores,
        uint8[] calldata reasons
    ) external onlyAggregator {
        Round storage r = _openRound(round);
        uint256 count = sites.length;
        if (scores.length != count || reasons.length != count) {
            revert FederationLedger__LengthMismatch(count, scores.length, reasons.length);
        }
        if (block.timestamp <= r.deadline && r.submissionCount < _activeSiteCount) {
            revert FederationLedger__RoundStillOpen(round, r.deadline);
        }
        if (count != r.submissionCount) {
            revert FederationLedger__MissingScores(round, r.submissionCount, count);
        }

        (uint256[] memory weights, uint256 total) = _computeWeights(round, sites, scores);
        r.phase = Phase.Valued;
        for (uint256 i = 0; i < count; ++i) {
            _applyValuation(round, sites[i], scores[i], reasons[i], uint64(weights[i]));
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

    /// @notice Abandons an open round that cannot be valued (no usable update), so the
    /// federation can open the next round from the last finalized model.
    ///
    /// Requirements:
    /// - caller is the aggregator.
    /// - the round is Open and its deadline passed.
    function cancelRound(uint256 round) external onlyAggregator {
        Round storage r = _openRound(round);
        if (block.timestamp <= r.deadline) revert FederationLedger__RoundStillOpen(round, r.deadline);
        r.phase = Phase.Cancelled;
        emit RoundCancelled(round);
    }

    // -------------------------------------------------------------- site role

    /// @notice Records the caller's update for `round`: where it is (`cid`), its content sha256
    /// and how many local samples trained it.
    ///
    /// Requirements:
    /// - caller is a registered site.
    /// - the round is Open and its deadline has not passed.
    /// - the caller has not submitted for this round.
    /// - no other site submitted the same `updateSha256` in this round (a copied update).
    /// - `updateSha256` non-zero, `cid` non-empty, `numSamples` positive.
    function submitUpdate(uint256 round, string calldata cid, bytes32 updateSha256, uint64 numSamples)
        external
    {
        if (!_sites[msg.sender].registered) revert FederationLedger__UnknownSite(msg.sender);
        Round storage r = _openRound(round);
        if (block.timestamp > r.deadline) revert FederationLedger__DeadlinePassed(round, r.deadline);
        if (updateSha256 == bytes32(0)) revert FederationLedger__InvalidParameter("sha256");
        if (bytes(cid).length == 0) revert FederationLedger__InvalidParameter("cid");
        if (numSamples == 0) revert FederationLedger__InvalidParameter("numSamples");
        Submission storage sub = _submissions[round][msg.sender];
        if (sub.sha256 != bytes32(0)) revert FederationLedger__AlreadySubmitted(round, msg.sender);
        HashEntry storage entry = _byHash[round][updateSha256];
        if (entry.site != address(0)) {
            revert FederationLedger__DuplicateUpdate(round, updateSha256, entry.site);
        }
        sub.sha256 = updateSha256;
        entry.site = msg.sender;
        entry.numSamples = numSamples;
        r.submissionCount += 1;
        emit UpdateSubmitted(round, msg.sender, cid, updateSha256, numSamples);
    }

    // ------------------------------------------------------------------ views

    /// @notice The deployer, who manages sites and the aggregator role.
    function coordinator() external view returns (address) {
        return _coordinator;
    }

    /// @notice The account that opens, values and finalizes rounds.
    function aggregator() external view returns (address) {
        return _aggregator;
    }

    /// @notice The EMA factor of reputation, fixed-point over SCORE_SCALE.
    function reputationAlpha() external view returns (uint32) {
        return _reputationAlpha;
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
            deadline: r.deadline,
            openedAt: r.openedAt,
            submissionCount: r.submissionCount,
            startSha256: r.startSha256,
            globalSha256: r.globalSha256,
            logSha256: r.logSha256
        });
    }

    /// @notice `site`'s submission in `round` (all zero when it did not submit).
    function getSubmission(uint256 round, address site)
        external
        view
        returns (SubmissionView memory)
    {
        return _submissionView(round, site);
    }

    /// @notice Every submission of `round`, ordered by site address.
    function getSubmissions(uint256 round) external view returns (SubmissionView[] memory out) {
        uint32 count = _rounds[round].submissionCount;
        out = new SubmissionView[](count);
        uint256 n = 0;
        uint256 all = _allSites.length;
        for (uint256 i = 0; i < all && n < count; ++i) {
            address site = _allSites[i];
            if (_submissions[round][site].sha256 != bytes32(0)) {
                out[n] = _submissionView(round, site);
                ++n;
            }
        }
        _sortByAddress(out);
    }

    /// @notice The site that submitted `updateSha256` in `round` (zero address when none).
    function submitterOf(uint256 round, bytes32 updateSha256) external view returns (address) {
        return _byHash[round][updateSha256].site;
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

    function _computeWeights(uint256 round, address[] calldata sites, uint32[] calldata scores)
        private
        view
        returns (uint256[] memory weights, uint256 total)
    {
        uint256 count = sites.length;
        uint256[] memory products = new uint256[](count);
        for (uint256 i = 0; i < count; ++i) {
            address site = sites[i];
            if (i > 0 && site <= sites[i - 1]) revert FederationLedger__SitesNotSorted(i);
            bytes32 sha = _submissions[round][site].sha256;
            if (sha == bytes32(0)) revert FederationLedger__NotSubmitted(round, site);
            if (scores[i] > SCORE_SCALE) revert FederationLedger__ScoreOutOfRange(site, scores[i]);
            products[i] = uint256(_byHash[round][sha].numSamples) * scores[i];
            total += products[i];
        }
        if (total == 0) revert FederationLedger__ZeroTotalWeight(round);
        weights = new uint256[](count);
        uint256 assigned = 0;
        for (uint256 i = 0; i < count; ++i) {
            weights[i] = (products[i] * WEIGHT_SCALE) / total;
            assigned += weights[i];
        }
        uint256 leftover = WEIGHT_SCALE - assigned;
        for (uint256 i = 0; i < count && leftover > 0; ++i) {
            if (mulmod(products[i], WEIGHT_SCALE, total) != 0) {
                weights[i] += 1;
                leftover -= 1;
            }
        }
    }

    function _applyValuation(uint256 round, address site, uint32 score, uint8 reason, uint64 weight)
        private
    {
        Submission storage sub = _submissions[round][site];
        sub.score = score;
        sub.reason = reason;
        sub.weight = weight;
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
        if (sub.sha256 == bytes32(0)) return v;
        v.site = site;
        v.sha256 = sub.sha256;
        v.numSamples = _byHash[round][sub.sha256].numSamples;
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
