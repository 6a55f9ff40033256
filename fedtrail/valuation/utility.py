"""Coalition utilities for the validation-based scorers (leave-one-out, Shapley).

``v(S)`` is the validation metric of the coalition model ``global + FedAvg(S)`` — the round's
global model plus the sample-count-weighted mean of the coalition's deltas, rebuilt from the
submitted deltas without retraining (GTG-Shapley, Liu et al. 2022) — and ``v(empty)`` the global
model's metric. The metric is the ROC AUC (macro one-vs-rest for more than two classes), the
negative mean cross-entropy loss, or the negative class-balanced cross-entropy after fitting the
coalition model's per-class intercept on the split (``"balanced_loss"``), so higher is better in
every case. All three hold for any number of classes (:mod:`fedtrail.ml.metrics`); a split whose
labels need more classes than the model has is a ConfigError naming both.

Why ``"balanced_loss"``: flipping 40% of a site's binary labels pulls its positive rate toward
0.5, the balanced validation split's prior, and the plain loss rewards an update mostly for
moving the model's prior toward the split's — measured, the two noisy sites of five got 71-82%
of the weight at Dirichlet alpha 1. Fitting the intercept first makes a pure prior shift cost
nothing, while label noise, which compresses the posterior, still raises the loss.

``project_shift`` (the round terms' ``valuation.project_shift``, an opt-in for private rounds):
every player's update is valued with its first-order uniform logit shift projected out
(:meth:`CoalitionUtility.shift_basis`). Under DP-SGD an update carries little ranking signal but
a large shift of every image's logit toward its own labels' majority, which the intercept fit
absorbs only in its mean: the spread it leaves costs a skewed honest site more than a
label-noisy one (README, *Valuation under DP*). Only the game's coalition models see the
projected updates; the weights still apply to the real ones.

Any ``Callable[[frozenset[str]], float]`` can stand in for it (see
:data:`fedtrail.valuation.base.Utility`); :class:`CachedUtility` counts and caches evaluations.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import AggregationError, deterministic_sum, unstacked
from fedtrail.ml.metrics import classification_metrics, fit_intercept, predict_logits
from fedtrail.ml.models import ModelSpec, SmallCNN, initial_model, load_federated
from fedtrail.ml.threads import one_thread
from fedtrail.valuation.base import Candidate, Utility, ValuationContext, usable

__all__ = ["CachedUtility", "CoalitionUtility", "GameValues"]


@dataclass(frozen=True)
class GameValues:
    """Per-player values of one cooperative game and what computing them cost."""

    values: dict[str, float]
    """Player -> value, in player order."""
    method: str
    """``"loo"``, ``"shapley"`` (exact) or ``"mc_shapley"``."""
    evaluations: int
    """Distinct coalitions whose utility was computed (including the empty and the full one)."""
    v_empty: float
    """Utility of the empty coalition (the global model)."""
    v_full: float
    """Utility of the grand coalition (every player)."""
    permutations: int = 0
    """Monte-Carlo permutations sampled (0 for the exact methods)."""


class CachedUtility:
    """Wraps a utility: every coalition is evaluated at most once; ``evaluations`` counts the
    evaluations of the wrapped utility (cache misses)."""

    def __init__(self, utility: Utility) -> None:
        self._utility = utility
        self._cache: dict[frozenset[str], float] = {}
        self.evaluations = 0

    def __call__(self, coalition: frozenset[str]) -> float:
        key = frozenset(coalition)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        value = float(self._utility(key))
        if not math.isfinite(value):
            raise ConfigError(f"the utility of coalition {sorted(key)} is not finite ({value})")
        self._cache[key] = value
        self.evaluations += 1
        return value


class CoalitionUtility:
    """``v(S)`` = metric on ``ctx.validation`` of ``global + FedAvg(deltas of S)``.

    The players are the usable candidates of ``ctx`` (or the ``candidates`` given). The coalition
    model is built as the aggregator builds a global model: float64 sums in address order, the
    mean cast to float32, added to the global model in float64 and cast once to float32. The
    metric itself comes from :func:`fedtrail.ml.metrics.evaluate`, whose last bits depend on the
    torch build and thread count.

    ``global_value``: the empty coalition's utility when the caller already computed it with
    another utility of the same global model, split and metric (the warm-up's harm check);
    calling this utility with the empty coalition then returns it instead of evaluating again.

    ``project_shift``: every player's update enters the coalition models (and the slopes of
    :meth:`linearised`) with its components along :meth:`shift_basis` removed (see the module
    docstring); False, the updates as submitted.
    """

    def __init__(
        self,
        ctx: ValuationContext,
        candidates: Sequence[Candidate] | None = None,
        *,
        global_value: float | None = None,
        project_shift: bool = False,
    ) -> None:
        if ctx.validation is None:
            raise ConfigError("validation-based valuation needs a validation split")
        players = usable(ctx) if candidates is None else list(candidates)
        if any(not c.usable for c in players):
            raise ConfigError("coalition players must be usable candidates (status OK, a delta)")
        if any(c.num_samples < 1 for c in players):
            raise ConfigError("every coalition player needs at least one training sample")
        self.players: tuple[str, ...] = tuple(c.site for c in players)
        self._n = {c.site: c.num_samples for c in players}
        self._row = {c.site: i for i, c in enumerate(players)}
        self._validation = ctx.validation
        top = int(np.asarray(ctx.validation.labels).max()) if len(ctx.validation) else 0
        if top >= ctx.spec.num_classes:
            raise ConfigError(
                f"the validation split's labels go up to {top} but the model has "
                f"{ctx.spec.num_classes} output classes"
            )
        self._metric = ctx.metric
        self._classes = ctx.spec.num_classes
        try:
            st = unstacked([ctx.global_state, *[c.delta for c in players if c.delta is not None]])
        except AggregationError as exc:
            raise ConfigError(f"cannot build coalition models: {exc}") from exc
        # the updates stay in their own memory: each is widened to float64 when a sum or a
        # slope reads it, into one reused row (the same values as stack's matrix, bit for bit)
        self._stacked = st
        self._global = st.row(0, np.empty(st.width, dtype=np.float64))
        self._buffer: np.ndarray | None = None
        self._model = scratch_model(ctx.spec)
        # the empty coalition's model is the global model whoever the players are
        self._global_value = global_value
        self._project_shift = bool(project_shift)
        self._shift: list[tuple[np.ndarray, float]] | None = None  # shift_basis, once
        # coalition -> utility, every evaluation this utility (or one it was copied from) made:
        # a coalition's model and split are fixed, so asking again gives the same bits
        self._known: dict[frozenset[str], float] = {}

    @property
    def global_value(self) -> float | None:
        """The empty coalition's utility when given or known (see the class docstring)."""
        return self._global_value

    def knowing_global(self, value: float) -> CoalitionUtility:
        """This utility (the same players, deltas and split; nothing recomputed) with ``value``
        as its empty coalition's utility: the value it gives for the global model."""
        out = copy.copy(self)
        out._global_value = value
        return out

    def alone(self) -> dict[str, float]:
        """Player -> the utility of its update alone, for the players whose singleton coalition
        this utility has evaluated (the warm-up's harm check evaluates every one)."""
        return {p: self._known[key] for p in self.players if (key := frozenset({p})) in self._known}

    def knowing_alone(self, values: Mapping[str, float]) -> CoalitionUtility:
        """This utility, giving ``values[p]`` (another utility's :meth:`alone` of the same
        global model, split, metric and ``project_shift``) for the singleton coalition of each
        of its players ``p`` there instead of evaluating it: that coalition model is the global
        model plus ``p``'s update at weight ``n_p / n_p`` = 1, built by the same steps whoever
        the other players are, so the value is the same bits (:meth:`state`)."""
        unknown = sorted(set(values) - set(self._row))
        if unknown:
            raise ConfigError(f"unknown players {unknown}")
        out = copy.copy(self)
        out._known = {**self._known, **{frozenset({p}): float(v) for p, v in values.items()}}
        return out

    def state(self, coalition: frozenset[str]) -> dict[str, torch.Tensor]:
        """The coalition model's state dict."""
        unknown = sorted(set(coalition) - set(self._row))
        if unknown:
            raise ConfigError(f"unknown players {unknown}")
        members = [s for s in self.players if s in coalition]  # address order
        if not members:
            return self._stacked.unflatten(self._global)
        total = sum(self._n[s] for s in members)
        acc = np.zeros_like(self._global)
        for s in members:
            row = self._delta(s)  # scaled in the reused row: the same products, no fresh array
            acc += np.multiply(row, self._n[s] / total, out=row)
        mean32 = acc.astype(np.float32).astype(np.float64)
        return self._stacked.unflatten(self._global + mean32)

    def _delta(self, player: str) -> np.ndarray:
        """The player's update as a float64 row, in the reused buffer (valid until the next
        call); with ``project_shift``, its components along :meth:`shift_basis` removed."""
        if self._buffer is None:
            self._buffer = np.empty_like(self._global)
        row = self._stacked.row(1 + self._row[player], self._buffer)
        if self._project_shift:
            for u, uu in self.shift_basis():
                row -= (deterministic_sum(row * u) / uu) * u
        return row

    def _flat_grad(self, params: dict[str, nn.Parameter]) -> np.ndarray:
        """The parameters' gradients flattened in the federated tensors' order, float64; a
        running statistic (no gradient) contributes zeros."""
        parts = []
        for name, shape in zip(self._stacked.names, self._stacked.shapes, strict=True):
            g = params[name].grad if name in params else None
            if g is None:
                parts.append(np.zeros(int(np.prod(shape))))
            else:
                parts.append(g.detach().to(torch.float64).reshape(-1).numpy())
        return np.concatenate(parts)

    @property
    def project_shift(self) -> bool:
        """Whether the updates are valued with their uniform logit shift projected out."""
        return self._project_shift

    def shift_basis(self) -> list[tuple[np.ndarray, float]]:
        """The directions ``project_shift`` removes from every update, as (vector, its squared
        norm) pairs, mutually orthogonal, over the flattened federated tensors in float64:
        for each class ``k`` from 1 on, the gradient at the round's global model of the mean
        over the validation images of the logit difference ``z_k - z_0`` (binary: the single
        direction that moves every image's logit difference by the same amount, to first
        order, through every layer; running statistics get no gradient, so a zero there),
        orthogonalised in class order (Gram-Schmidt, each direction less its components along
        the earlier ones). A direction that vanishes (below 1e-24 of its squared norm before,
        e.g. a zero model) is left out. Each gradient is one forward pass in eval mode in
        float32 (batches of 256 images in dataset order, the difference summed in float64) and
        one backward pass, on one torch thread whatever the caller set (an auditor with other
        cores gets the same directions), every dot product a
        :func:`~fedtrail.ml.aggregation.deterministic_sum`: deterministic for a torch build and
        instruction set. Computed once per utility."""
        if self._shift is not None:
            return self._shift
        assert self._validation is not None
        validation = self._validation
        model = self._model
        n = len(validation)
        if n == 0:
            self._shift = []
            return self._shift
        load_federated(model, self._stacked.unflatten(self._global))
        was_training = model.training
        model.eval()
        basis: list[tuple[np.ndarray, float]] = []
        with one_thread():  # the directions' bits must not depend on the machine's cores
            try:
                for cls in range(1, self._classes):
                    model.zero_grad(set_to_none=True)
                    for start in range(0, n, _BATCH):
                        z = model(torch.tensor(validation.images[start : start + _BATCH]))
                        z = z.to(torch.float64)
                        ((z[:, cls] - z[:, 0]).sum() / n).backward()
                    u = self._flat_grad(dict(model.named_parameters()))
                    before = deterministic_sum(u * u)
                    for v, vv in basis:
                        u -= (deterministic_sum(u * v) / vv) * v
                    uu = deterministic_sum(u * u)
                    if uu > 0.0 and uu > 1e-24 * before:
                        basis.append((u, uu))
            finally:
                model.zero_grad(set_to_none=True)
                model.train(was_training)
        self._shift = basis
        return basis

    def outputs(self, coalition: frozenset[str]) -> np.ndarray:
        """The coalition model's raw outputs on the validation split."""
        assert self._validation is not None
        load_federated(self._model, self.state(coalition))
        return predict_logits(self._model, self._validation)

    def slopes(self, at: frozenset[str] | None = None) -> dict[str, float]:
        """Each player's first-order effect on the utility at the coalition model of ``at``
        (None: the grand coalition); see :meth:`linearised`, whose slopes these are."""
        return self.linearised(at)[1]

    def linearised(self, at: frozenset[str] | None = None) -> tuple[float, dict[str, float]]:
        """The utility of the coalition ``at`` (None: the grand coalition), the value calling
        this utility gives, and each player's first-order effect on it there: ``g . delta_i``,
        where ``g`` is the gradient of the utility with respect to the model's parameters at
        the coalition model of ``at`` (running statistics, not parameters, get no gradient).
        For ``"balanced_loss"`` the intercept is fitted first and then held fixed: at the fitted
        optimum that is the gradient of the fitted loss (envelope theorem). The utility and the
        intercept come from one evaluation of the coalition model, then one backward pass in
        float32 (the loss in float64), in batches of 256 images in dataset order: deterministic
        for a torch build and thread count. The evaluation is the gradient pass's own forward
        pass when the model's ``autograd_outputs_exact`` says that gives predict_logits' values
        (:class:`~fedtrail.ml.models.SmallCNN`) and the split has at most
        :data:`FUSED_IMAGES` images; else a forward pass without autograd, then another with
        it. ``"auc"`` has no gradient: ConfigError."""
        assert self._validation is not None
        if self._metric == "auc":
            raise ConfigError("the AUC has no gradient: linearised values need a loss metric")
        where = frozenset(self.players) if at is None else at
        validation = self._validation
        model = self._model
        labels = np.array(validation.labels, dtype=np.int64)  # writable, for torch
        was_training = model.training
        model.eval()
        model.zero_grad(set_to_none=True)
        try:
            if getattr(model, "autograd_outputs_exact", False) and len(validation) <= FUSED_IMAGES:
                # one forward pass with autograd gives the outputs (the same bits as
                # predict_logits': same batches, and the model says its autograd forward
                # computes the same values) and the graph of the gradient pass below
                load_federated(model, self.state(where))
                outputs = [
                    model(torch.tensor(validation.images[start : start + _BATCH]))
                    for start in range(0, labels.size, _BATCH)
                ]
                raw = torch.cat([z.detach().to(torch.float64) for z in outputs]).numpy()
            else:
                outputs = []
                raw = self.outputs(where)  # loads the model
            logits = uninformative_where_broken(raw)
            k = logits.shape[1]
            value, fitted = self._loss_utility(logits)
            if fitted is not None:  # balanced_loss: the fitted intercept, held fixed
                bias = fitted
                counts = np.bincount(labels, minlength=k).astype(np.float64)
                weights = 1.0 / (int((counts > 0).sum()) * counts[labels])
            else:
                bias = np.zeros(k)
                weights = np.full(labels.size, 1.0 / labels.size)
            params = dict(model.named_parameters())
            for b, start in enumerate(range(0, labels.size, _BATCH)):
                if outputs:
                    out = outputs[b]
                else:
                    out = model(torch.tensor(validation.images[start : start + _BATCH]))
                z = out.to(torch.float64) + torch.from_numpy(bias)
                y = torch.from_numpy(labels[start : start + _BATCH])
                w = torch.from_numpy(weights[start : start + _BATCH])
                picked = torch.log_softmax(z, dim=1).gather(1, y[:, None])[:, 0]
                torch.autograd.backward((w * picked).sum())  # d(utility) = d(-loss)
        finally:
            model.train(was_training)
        grad = self._flat_grad(params)
        model.zero_grad(set_to_none=True)
        # deterministic_dot, not np.dot: OpenBLAS splits a long dot product across its own
        # threads (OPENBLAS_NUM_THREADS, not torch's), so np.dot's last bits depended on the
        # machine's core count (measured: 48 of 50 results differed between 1 and 2 threads).
        slopes = {}
        for p in self.players:
            row = self._delta(p)  # deterministic_dot's products, in the reused buffer
            slopes[p] = deterministic_sum(np.multiply(row, grad, out=row))
        return value, slopes

    def samples(self, player: str) -> int:
        """The player's training sample count (its FedAvg weight)."""
        return self._n[player]

    def _loss_utility(self, logits: np.ndarray) -> tuple[float, np.ndarray | None]:
        """Minus the loss metric of ``logits`` on the validation split, and for
        ``"balanced_loss"`` the per-class intercept fitted there (None for ``"loss"``)."""
        assert self._validation is not None
        try:
            if self._metric == "balanced_loss":
                fit = fit_intercept(logits, self._validation.labels)
                return -fit.loss, np.asarray(fit.bias, dtype=np.float64)
            return -classification_metrics(logits, self._validation.labels).loss, None
        except ValueError as exc:
            raise ConfigError(f"cannot value on the validation split: {exc}") from exc

    def __call__(self, coalition: frozenset[str]) -> float:
        assert self._validation is not None
        if not coalition and self._global_value is not None:
            return self._global_value
        key = frozenset(coalition)
        known = self._known.get(key)
        if known is not None:
            return known
        value = self._evaluate(key)
        self._known[key] = value
        return value

    def _evaluate(self, coalition: frozenset[str]) -> float:
        assert self._validation is not None
        # An image whose outputs overflowed counts as unpredicted (zero logits, a uniform
        # guess), so a coalition holding a broken update gets a finite, poor utility instead
        # of stopping the round (value_round screens such updates out first).
        logits = uninformative_where_broken(self.outputs(coalition))
        if self._metric != "auc":
            return self._loss_utility(logits)[0]
        try:
            m = classification_metrics(logits, self._validation.labels)
        except ValueError as exc:
            raise ConfigError(f"cannot value on the validation split: {exc}") from exc
        if math.isnan(m.auc):
            raise ConfigError("the validation split holds one class only; AUC is undefined")
        # two classes: class 1's AUC; more: the macro one-vs-rest AUC
        return m.auc


_BATCH = 256
"""Images per forward pass of :meth:`CoalitionUtility.linearised` (predict_logits' default
batch: the same batches give the same bits)."""

FUSED_IMAGES = 1024
"""Up to this many validation images :meth:`CoalitionUtility.linearised` keeps every batch's
autograd graph from one forward pass (SmallCNN: ~0.1 MB an image) instead of a second forward
pass without autograd for the outputs."""

_SCRATCH = threading.local()


def scratch_model(spec: ModelSpec) -> nn.Module:
    """The model coalition states are loaded into: one per spec and thread, shared by the
    utilities built there (building one took ~5 ms, and a round builds two or three). Every
    evaluation loads all the federated tensors first and runs in eval mode, so nothing of one
    coalition's model carries over to the next (integer buffers stay as built, as before).
    The round's finiteness certificate reads its architecture only (``value_round``)."""
    models: dict[ModelSpec, nn.Module] = _SCRATCH.__dict__.setdefault("models", {})
    model = models.get(spec)
    if model is None:
        model = models[spec] = initial_model(spec, seed=0)
        if isinstance(model, SmallCNN):
            model.channels_last_pool = True  # the gradient pass's pooling: the same bits, faster
    return model


def uninformative_where_broken(logits: np.ndarray) -> np.ndarray:
    """``logits`` with every row that holds NaN or an infinity replaced by zeros."""
    broken = ~np.isfinite(logits).all(axis=1)
    if not broken.any():
        return logits
    out = logits.copy()
    out[broken] = 0.0
    return out
