"""A multinomial logistic-regression head on frozen features.

The L2 strength is chosen by stratified cross-validation on the training split only, so
the validation and test numbers reported afterwards stay honest. Features are standardised
for the fit and the scaling is folded back into the weights, so the result is a plain
``Linear`` layer on raw features.

At size, time grows linearly with the number of images and memory stays bounded by a chunk
of rows plus the weights. The features may be memory-mapped (or a ``FeatureRows`` selection
of such an array): they are read ``CHUNK_ROWS`` rows at a time and standardised chunk by
chunk, and labels stay class indices, never a one-hot matrix. The C search runs on a
stratified subsample of at most ``SEARCH_ROWS`` rows (every row below that), and the final fit
on all rows starts from the subsample's solution at the chosen C: by L-BFGS over every row up
to ``MINIBATCH_ABOVE`` rows, by a few epochs of mini-batch steps beyond, where one L-BFGS
iteration costs a whole pass over the data and it needs tens of them.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from imgcls.errors import DataError
from imgcls.system.devices import CPU, place
from imgcls.training._inner_cv import CV_FOLDS, class_weights, fold_score, inner_folds

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
# Where the grid extends, a value at a time, while the chosen C sits on its edge.
C_LADDER = (1e-4, 3e-4, 1e-3, 3e-3, *C_GRID, 3.0, 10.0, 30.0, 100.0)
DEFAULT_C = 0.1  # used when a class is too small to cross-validate
MAX_ITER = 300
CHUNK_ROWS = 16_384  # rows of features in memory at once while fitting
LOGITS_BYTES = 32 * 2**20  # and fewer where a chunk's float64 logits would exceed this
SEARCH_ROWS = 20_000  # the C search's subsample
MINIBATCH_ABOVE = 150_000  # rows beyond which the final fit takes mini-batch steps
MINIBATCH_EPOCHS = 3
MINIBATCH_ROWS = 1_024
MINIBATCH_LR = 3e-3  # Adam's step on standardised features, decayed to zero over the epochs


class FeatureRows:
    """The rows ``rows`` of a (memory-mapped) feature matrix, read only where sliced: a
    training split of the matrix without a copy of it."""

    def __init__(self, features: np.ndarray, rows: np.ndarray) -> None:
        self.features, self.rows = features, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), int(features.shape[1]))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        return np.asarray(self.features[self.rows[index]])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(self.features[self.rows], dtype=dtype)


Features = np.ndarray | FeatureRows


@dataclass(frozen=True)
class LinearHead:
    """``logits = features @ weight.T + bias`` for all classes (``weight``: classes x dim)."""

    weight: np.ndarray
    bias: np.ndarray
    c: float
    cv_accuracy: dict[float, float]
    cv_log_loss: dict[float, float]
    grid_note: str | None = None  # why the chosen C is on the grid's edge, when it is

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias


@dataclass(frozen=True)
class Standardiser:
    """Per-feature centre and scale, applied a chunk at a time."""

    centre: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, features: Features) -> Standardiser:
        """The features' mean and standard deviation (+1e-6), in chunks where they are many."""
        if len(features) <= CHUNK_ROWS:
            block = np.asarray(features[:])
            return cls(block.mean(axis=0), block.std(axis=0) + 1e-6)
        total = np.zeros(features.shape[1])
        for block in row_chunks(features):
            total += block.sum(axis=0, dtype=np.float64)
        centre = total / len(features)
        spread, centre32 = np.zeros_like(centre), centre.astype(np.float32)
        for block in row_chunks(features):
            deviation = block - centre32  # float32 per chunk, summed in float64
            spread += np.square(deviation, out=deviation).sum(axis=0, dtype=np.float64)
        return cls(centre.astype(np.float32), (np.sqrt(spread / len(features)) + 1e-6).astype(np.float32))

    def __call__(self, block: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((block - self.centre) / self.scale, dtype=np.float32)


def row_chunks(features: Features, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """``features`` ``rows`` rows at a time, each read into memory (from a memory-mapped file or
    a ``FeatureRows`` selection) only when it is reached."""
    for start in range(0, len(features), rows):
        yield np.asarray(features[start : start + rows])


def fit_linear_head(
    features: Features,
    labels: np.ndarray,
    *,
    num_classes: int,
    seed: int,
    c_grid: tuple[float, ...] = C_GRID,
    balanced: bool = False,
    device: torch.device = CPU,
) -> LinearHead:
    """Fit the head; ``labels`` are class indices in ``range(num_classes)``.

    ``balanced`` weights every class equally (inverse class frequency) and picks C by
    balanced accuracy. The solver's products with the features run on ``device``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    standardise = Standardiser.of(features)
    sample = search_sample(labels, seed=seed)
    searched = standardise(np.asarray(features[sample] if sample is not None else features[:]))
    scores = _search(
        searched,
        labels[sample] if sample is not None else labels,
        c_grid=c_grid,
        seed=seed,
        balanced=balanced,
        device=device,
    )
    best_c = choose_c(scores)
    log.info(
        "logistic head: C=%s chosen by %d-fold CV on %s (%saccuracy %.3f, log loss %.3f)",
        best_c,
        CV_FOLDS,
        "train" if sample is None else f"{len(sample)} of {len(labels)} training images",
        "balanced " if balanced else "",
        scores[best_c].accuracy,
        scores[best_c].log_loss,
    )
    _check_classes(labels, num_classes)
    if sample is None:
        weight, bias, _ = _minimise(searched, labels, best_c, num_classes, balanced, device=device)
    else:
        weight, bias = _fit_all(
            features,
            labels,
            searched,
            sample,
            c=best_c,
            num_classes=num_classes,
            balanced=balanced,
            standardise=standardise,
            seed=seed,
            device=device,
        )
    # Fold the standardisation into the layer: w' = w / s, b' = b - w' . mean
    weight = weight / standardise.scale
    bias = bias - weight @ standardise.centre
    return LinearHead(
        weight=weight.astype(np.float32),
        bias=bias.astype(np.float32),
        c=best_c,
        cv_accuracy={c: s.accuracy for c, s in scores.items()},
        cv_log_loss={c: s.log_loss for c, s in scores.items()},
        grid_note=_edge_note(scores, best_c),
    )


def search_sample(labels: np.ndarray, *, seed: int, rows: int = SEARCH_ROWS) -> np.ndarray | None:
    """Sorted row indices of a stratified subsample of ``rows`` rows (at least two of each
    class where it has them), or ``None`` when there are no more rows than that."""
    if len(labels) <= rows:
        return None
    rng = np.random.default_rng(seed)
    share = rows / len(labels)
    picked = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = min(len(members), max(2, round(share * len(members))))
        picked.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picked))


def _check_classes(labels: np.ndarray, num_classes: int) -> None:
    present = len(np.unique(labels))
    if present != num_classes:
        raise DataError(f"every class needs readable training images; {present} of {num_classes} have some")


def _fit_all(
    features: Features,
    labels: np.ndarray,
    searched: np.ndarray,
    sample: np.ndarray,
    *,
    c: float,
    num_classes: int,
    balanced: bool,
    standardise: Standardiser,
    seed: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """The fit on every row, from the subsample's solution at ``c``."""
    _, _, start = _minimise(searched, labels[sample], c, num_classes, balanced, device=device)
    if len(labels) <= MINIBATCH_ABOVE:
        problem = _problem(features, labels, num_classes, balanced, device, standardise=standardise)
        weight, bias, _ = _solve(problem, c, start=start)
        return weight, bias
    # Mini-batches are read on the host and sent to the device one at a time.
    problem = _problem(features, labels, num_classes, balanced, CPU, standardise=standardise)
    return _minibatch(problem, c, start=start, seed=seed, device=device)


@dataclass(frozen=True)
class CScore:
    """One C's inner cross-validation: (balanced) accuracy and (class-weighted) log loss."""

    accuracy: float
    log_loss: float


def _search(
    x: np.ndarray,
    y: np.ndarray,
    *,
    c_grid: tuple[float, ...],
    seed: int,
    balanced: bool,
    device: torch.device,
) -> dict[float, CScore]:
    """CV scores over ``c_grid``, extended along ``C_LADDER`` while the chosen C is the
    grid's smallest or largest value: a choice on the edge says the best may lie beyond it."""
    if len(c_grid) == 1:
        return {c_grid[0]: CScore(float("nan"), float("nan"))}
    scores = _cross_validate(x, y, c_grid=c_grid, seed=seed, balanced=balanced, device=device)
    while not _unmeasured(scores):
        beyond = _beyond_edge(scores, choose_c(scores))
        if beyond is None:
            break
        scores.update(_cross_validate(x, y, c_grid=(beyond,), seed=seed, balanced=balanced, device=device))
    return dict(sorted(scores.items()))


def _unmeasured(scores: dict[float, CScore]) -> bool:
    return any(np.isnan(s.accuracy) for s in scores.values())


def _beyond_edge(scores: dict[float, CScore], chosen: float) -> float | None:
    """The ladder's next value past the edge ``chosen`` sits on, if there is one."""
    if chosen == min(scores):
        lower = [c for c in C_LADDER if c < chosen]
        return lower[-1] if lower else None
    if chosen == max(scores):
        higher = [c for c in C_LADDER if c > chosen]
        return higher[0] if higher else None
    return None


def _edge_note(scores: dict[float, CScore], chosen: float) -> str | None:
    """Why a C on the grid's edge was not searched past (the ladder ends there)."""
    if len(scores) < 2 or _unmeasured(scores):
        return None
    if chosen == min(scores):
        return f"C={chosen} is the ladder's smallest value: imgcls does not regularise harder"
    if chosen == max(scores):
        return f"C={chosen} is the ladder's largest value: imgcls does not regularise less"
    return None


def choose_c(scores: dict[float, CScore]) -> float:
    """The C of the best inner-CV accuracy; among equal accuracies, the lowest CV log loss.

    Accuracy is what the head is judged by, but on a few hundred images it changes in steps
    of whole images and is often flat over a decade of C; the log loss, a proper score that
    moves with every probability, then picks the best-calibrated of the tied values.
    """
    if _unmeasured(scores):  # too few images to cross-validate: the one candidate given
        return next(iter(scores))
    best = max(s.accuracy for s in scores.values())
    tied = {c: s for c, s in scores.items() if s.accuracy >= best - 1e-12}
    return min(tied, key=lambda c: (tied[c].log_loss, c))


def _cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    *,
    c_grid: tuple[float, ...],
    seed: int,
    balanced: bool,
    device: torch.device,
) -> dict[float, CScore]:
    fold_of = inner_folds(y, seed=seed)
    if fold_of is None:
        return {DEFAULT_C: CScore(float("nan"), float("nan"))}
    folds = int(fold_of.max()) + 1
    num_classes = int(y.max()) + 1
    # Per C, each held-out image's predicted class and the log-probability of its true class:
    # all the scores need, without a held-out logit matrix per C (images x classes each).
    predicted = {c: np.empty(len(y), dtype=np.int64) for c in c_grid}
    true_log_prob = {c: np.empty(len(y)) for c in c_grid}
    for fold in range(folds):
        train, held_out = fold_of != fold, fold_of == fold
        # Each fit starts from the previous, more regularised solution (as sklearn's
        # warm_start does): far fewer iterations for the same fold accuracies. The fold's
        # data is prepared (and moved to the device) once for every C.
        problem = _problem(x[train], y[train], num_classes, balanced, device)
        params = None
        for c in sorted(c_grid):
            weight, bias, params = _solve(problem, c, start=params)
            logits = x[held_out] @ weight.T + bias
            predicted[c][held_out] = logits.argmax(axis=1)
            true_log_prob[c][held_out] = _log_softmax(logits)[np.arange(len(logits)), y[held_out]]
    weight = class_weights(y, num_classes)[y] if balanced else np.ones(len(y))
    return {
        c: CScore(
            fold_score(y, predicted[c], num_classes=num_classes, balanced=balanced),
            float(-(weight * true_log_prob[c]).sum() / weight.sum()),
        )
        for c in c_grid
    }


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _minimise(
    x: np.ndarray,
    y: np.ndarray,
    c: float,
    num_classes: int,
    balanced: bool,
    *,
    start: np.ndarray | None = None,
    gtol: float = 1e-4,
    device: torch.device = CPU,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multinomial logistic regression, L2 on the weights (not the bias): the weights, the
    bias and the raw parameter vector (a warm start for the next C). ``gtol``: stop when no
    gradient entry exceeds it (sklearn's default ``tol``).

    The objective is scikit-learn's (``C * sum of log losses + |W|^2 / 2``, divided by
    ``C * n`` for scale) and so are the stopping rules, without importing scikit-learn or
    scipy (1.0 s and 0.45 s of start-up). Two classes use sklearn's binary form: one free row,
    the other fixed at zero, since softmax([0, z]) is sigmoid(z).
    """
    return _solve(_problem(x, y, num_classes, balanced, device), c, start=start, gtol=gtol)


def _problem(
    x: Features,
    y: np.ndarray,
    num_classes: int,
    balanced: bool,
    device: torch.device,
    *,
    standardise: Standardiser | None = None,
) -> _LogisticLoss:
    """The loss of ``x`` (standardised by ``standardise`` chunk by chunk, if given), ``y`` for
    any C, its data where ``device`` computes."""
    free = num_classes if num_classes > 2 else 1
    sample_weight = class_weights(y, num_classes)[y] if balanced else np.ones(len(y))
    if device.type == "cpu":
        return _LogisticLoss(x, y, sample_weight, free, num_classes, standardise=standardise)
    return _DeviceLogisticLoss(x, y, sample_weight, free, num_classes, device, standardise=standardise)


def _solve(
    problem: _LogisticLoss, c: float, *, start: np.ndarray | None = None, gtol: float = 1e-4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_minimise`` on a prepared ``problem``."""
    x0 = start if start is not None else np.zeros(problem.free * (problem.x.shape[1] + 1))
    params = _lbfgs(lambda p: problem(p, c), x0, max_iter=MAX_ITER, gtol=gtol, ftol=64 * np.finfo(float).eps)
    weight, bias = problem.unpack(params)
    return weight, bias, params


def _lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    *,
    max_iter: int,
    gtol: float,
    ftol: float,
    memory: int = 10,
) -> np.ndarray:
    """Minimise a smooth convex ``fun`` (value and gradient) by L-BFGS with a backtracking
    (Armijo) line search; stops as scipy's L-BFGS-B does, at max |gradient| <= ``gtol`` or a
    relative decrease <= ``ftol``. On the probe's problems it takes as many iterations as
    scipy and reaches the same objective (a test holds them equal), without scipy's overhead.
    """
    x = np.array(x0, dtype=np.float64)
    value, grad = fun(x)
    pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=memory)
    for _ in range(max_iter):
        if np.abs(grad).max() <= gtol:
            break
        direction = -_inverse_hessian_times(grad, pairs)
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction: forget the curvature pairs
            pairs.clear()
            direction, slope = -grad, -float(grad @ grad)
        step = 1.0 if pairs else min(1.0, 1.0 / float(np.abs(grad).sum()))
        for _ in range(50):
            new_x = x + step * direction
            new_value, new_grad = fun(new_x)
            if new_value <= value + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break  # no decrease along the direction: x is as good as it gets
        s, y = new_x - x, new_grad - grad
        if float(s @ y) > 1e-12:
            pairs.append((s, y, 1.0 / float(s @ y)))
        converged = value - new_value <= ftol * max(abs(value), abs(new_value), 1.0)
        x, value, grad = new_x, new_value, new_grad
        if converged:
            break
    return x


def _inverse_hessian_times(grad: np.ndarray, pairs: deque) -> np.ndarray:
    """L-BFGS's two-loop recursion (Nocedal & Wright, algorithm 7.4)."""
    q = grad.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * float(s @ q)
        q -= alpha * y
        alphas.append(alpha)
    if pairs:
        s, y, rho = pairs[-1]
        q *= 1.0 / (rho * float(y @ y))  # initial scaling s.y / y.y
    for (s, y, rho), alpha in zip(pairs, reversed(alphas), strict=True):
        q += (alpha - rho * float(y @ q)) * s
    return q


class _LogisticLoss:
    """Loss and gradient of the (class-weighted) softmax regression, a chunk of rows at a time.

    The two products with the features run in float32 (faster, and the solution is the
    same); parameters, losses and gradients stay float64 for the optimiser.
    """

    def __init__(
        self,
        x: Features,
        y: np.ndarray,
        sample_weight: np.ndarray,
        free: int,
        num_classes: int,
        *,
        standardise: Standardiser | None = None,
    ) -> None:
        self.x = x if standardise is not None else np.ascontiguousarray(x, dtype=np.float32)
        self.y, self.free, self.num_classes = y, free, num_classes
        self.standardise = standardise
        self.sample_weight = sample_weight / sample_weight.sum()
        self.total_weight = float(sample_weight.sum())
        self.dim = int(x.shape[1])

    def l2(self, c: float) -> float:
        """The L2 factor of ``C``: ``|W|^2 / 2`` over ``C`` times the total sample weight."""
        return 1.0 / (c * self.total_weight)

    def unpack(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All classes' weight rows and biases (the fixed row of the binary form is zero)."""
        weight = params[: self.free * self.dim].reshape(self.free, self.dim)
        bias = params[self.free * self.dim :]
        if self.free == 1:
            weight, bias = np.vstack([np.zeros(self.dim), weight]), np.concatenate([[0.0], bias])
        return weight, bias

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """``(rows, standardised float32 features)`` a chunk at a time."""
        rows = max(256, min(CHUNK_ROWS, LOGITS_BYTES // (8 * self.num_classes)))
        for start in range(0, len(self.y), rows):
            where = slice(start, min(start + rows, len(self.y)))
            block = self.x[where]
            yield where, self.standardise(block) if self.standardise is not None else block

    def __call__(self, params: np.ndarray, c: float) -> tuple[float, np.ndarray]:
        l2 = self.l2(c)
        weight, bias = self.unpack(params)
        w32 = weight.T.astype(np.float32)
        loss, grad_weight, grad_bias = 0.0, np.zeros((self.free, self.dim)), np.zeros(self.free)
        for where, block in self.blocks():
            logits = (block @ w32).astype(np.float64) + bias
            logits -= logits.max(axis=1, keepdims=True)
            exp = np.exp(logits)
            total = exp.sum(axis=1, keepdims=True)
            rows, y, weights = np.arange(len(logits)), self.y[where], self.sample_weight[where]
            loss -= float(weights @ (logits[rows, y] - np.log(total[:, 0])))
            residual = exp / total
            residual[rows, y] -= 1.0
            residual = (residual * weights[:, None])[:, -self.free :]
            grad_weight += (residual.T.astype(np.float32) @ block).astype(np.float64)
            grad_bias += residual.sum(axis=0)
        free_weight = weight[-self.free :]
        loss += 0.5 * l2 * float((free_weight * free_weight).sum())
        return loss, np.concatenate([(grad_weight + l2 * free_weight).ravel(), grad_bias])


class _DeviceLogisticLoss(_LogisticLoss):
    """The same loss and gradient computed with torch on an accelerator, where the
    standardised features are copied once: only the parameters and the gradient cross to and
    from the host. (On a CPU, numpy's products on these skinny matrices are faster than
    torch's.)"""

    def __init__(
        self,
        x: Features,
        y: np.ndarray,
        sample_weight: np.ndarray,
        free: int,
        num_classes: int,
        device: torch.device,
        *,
        standardise: Standardiser | None = None,
    ) -> None:
        super().__init__(x, y, sample_weight, free, num_classes, standardise=standardise)
        self.device = device
        self.on_device = torch.cat([place(torch.from_numpy(block), device) for _, block in self.blocks()])
        self.labels_on_device = place(torch.from_numpy(y), device)
        self.weight_on_device = place(torch.from_numpy(self.sample_weight), device)

    def __call__(self, params: np.ndarray, c: float) -> tuple[float, np.ndarray]:
        l2 = self.l2(c)
        weight, bias = self.unpack(params)
        w = place(torch.from_numpy(weight.astype(np.float32)), self.device)
        logits = (self.on_device @ w.T).double() + place(torch.from_numpy(bias), self.device)
        log_probs = torch.log_softmax(logits, dim=1)
        picked = log_probs.gather(1, self.labels_on_device[:, None])[:, 0]
        free_weight = weight[-self.free :]
        loss = -float(self.weight_on_device @ picked)
        loss += 0.5 * l2 * float((free_weight * free_weight).sum())
        residual = log_probs.exp_()
        residual.scatter_add_(1, self.labels_on_device[:, None], torch.full_like(picked[:, None], -1.0))
        residual = (residual * self.weight_on_device[:, None])[:, -self.free :]
        grad_weight = (residual.T.float() @ self.on_device).double().cpu().numpy() + l2 * free_weight
        return loss, np.concatenate([grad_weight.ravel(), residual.sum(dim=0).cpu().numpy()])


def _minibatch(
    problem: _LogisticLoss, c: float, *, start: np.ndarray, seed: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """The same objective by Adam on shuffled mini-batches, ``MINIBATCH_EPOCHS`` passes from
    ``start`` with the step decayed to zero; each batch's loss is scaled so that its expected
    value is the whole objective's."""
    weight, bias = (
        place(torch.tensor(p[-problem.free :], dtype=torch.float32), device) for p in problem.unpack(start)
    )
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimiser = torch.optim.Adam([weight, bias], lr=MINIBATCH_LR)
    n = len(problem.y)
    steps = MINIBATCH_EPOCHS * math.ceil(n / MINIBATCH_ROWS)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - step / steps)
    relative_weight = problem.sample_weight * n  # mean 1 over the rows
    l2 = problem.l2(c)
    rng = np.random.default_rng(seed)
    for _ in range(MINIBATCH_EPOCHS):
        order = rng.permutation(n)
        for begin in range(0, n, MINIBATCH_ROWS):
            rows = np.sort(order[begin : begin + MINIBATCH_ROWS])
            block = np.asarray(problem.x[rows])
            x = place(
                torch.from_numpy(problem.standardise(block) if problem.standardise is not None else block),
                device,
            )
            y = place(torch.from_numpy(problem.y[rows]), device)
            w = place(torch.from_numpy(relative_weight[rows]).float(), device)
            logits = x @ weight.T + bias
            if problem.free == 1:
                logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
            loss = (w * F.cross_entropy(logits, y, reduction="none")).mean() + 0.5 * l2 * (
                weight * weight
            ).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    full = np.concatenate(
        [weight.detach().cpu().double().numpy().ravel(), bias.detach().cpu().double().numpy()]
    )
    return problem.unpack(full)
