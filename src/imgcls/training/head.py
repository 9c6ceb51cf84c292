"""A multinomial logistic-regression head on frozen features.

The L2 strength is chosen by stratified cross-validation on the training split only, so
the validation and test numbers reported afterwards stay honest. Features are standardised
for the fit and the scaling is folded back into the weights, so the result is a plain
``Linear`` layer on raw features.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from imgcls.errors import DataError
from imgcls.system.devices import CPU, place
from imgcls.training._inner_cv import CV_FOLDS, class_weights, fold_score, inner_folds

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
# Where the grid extends, a value at a time, while the chosen C sits on its edge.
C_LADDER = (1e-4, 3e-4, 1e-3, 3e-3, *C_GRID, 3.0, 10.0, 30.0, 100.0)
DEFAULT_C = 0.1  # used when a class is too small to cross-validate
MAX_ITER = 300


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


def fit_linear_head(
    features: np.ndarray,
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
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    standardised = (features - mean) / scale
    scores = _search(standardised, labels, c_grid=c_grid, seed=seed, balanced=balanced, device=device)
    best_c = choose_c(scores)
    log.info(
        "logistic head: C=%s chosen by %d-fold CV on train (%saccuracy %.3f, log loss %.3f)",
        best_c,
        CV_FOLDS,
        "balanced " if balanced else "",
        scores[best_c].accuracy,
        scores[best_c].log_loss,
    )
    weight, bias = _fit(
        standardised, labels, c=best_c, num_classes=num_classes, balanced=balanced, device=device
    )
    # Fold the standardisation into the layer: w' = w / s, b' = b - w' . mean
    weight = weight / scale
    bias = bias - weight @ mean
    return LinearHead(
        weight=weight.astype(np.float32),
        bias=bias.astype(np.float32),
        c=best_c,
        cv_accuracy={c: s.accuracy for c, s in scores.items()},
        cv_log_loss={c: s.log_loss for c, s in scores.items()},
        grid_note=_edge_note(scores, best_c),
    )


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
    logits = {c: np.empty((len(y), num_classes)) for c in c_grid}
    for fold in range(folds):
        train, held_out = fold_of != fold, fold_of == fold
        # Each fit starts from the previous, more regularised solution (as sklearn's
        # warm_start does): far fewer iterations for the same fold accuracies. The fold's
        # data is prepared (and moved to the device) once for every C.
        problem = _problem(x[train], y[train], num_classes, balanced, device)
        params = None
        for c in sorted(c_grid):
            weight, bias, params = _solve(problem, c, start=params)
            logits[c][held_out] = x[held_out] @ weight.T + bias
    weight = class_weights(y, num_classes)[y] if balanced else np.ones(len(y))
    return {
        c: CScore(
            fold_score(y, z.argmax(axis=1), num_classes=num_classes, balanced=balanced),
            _log_loss(z, y, weight),
        )
        for c, z in logits.items()
    }


def _log_loss(logits: np.ndarray, labels: np.ndarray, weight: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-(weight * log_probs[np.arange(len(labels)), labels]).sum() / weight.sum())


def _fit(
    x: np.ndarray, y: np.ndarray, *, c: float, num_classes: int, balanced: bool, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    present = np.unique(y)
    if len(present) != num_classes:
        raise DataError(
            f"every class needs readable training images; {len(present)} of {num_classes} have some"
        )
    weight, bias, _ = _minimise(x, y, c, num_classes, balanced, device=device)
    return weight, bias


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
    x: np.ndarray, y: np.ndarray, num_classes: int, balanced: bool, device: torch.device
) -> _LogisticLoss:
    """The loss of ``x``, ``y`` for any C, its data where ``device`` computes."""
    free = num_classes if num_classes > 2 else 1
    onehot = np.eye(num_classes)[y]
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    sample_weight = len(y) / (num_classes * counts[y]) if balanced else np.ones(len(y))
    if device.type == "cpu":
        return _LogisticLoss(x, onehot, sample_weight, free)
    return _DeviceLogisticLoss(x, onehot, sample_weight, free, device)


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
    """Loss and gradient of the (class-weighted) softmax regression.

    The two products with the features run in float32 (faster, and the solution is the
    same); parameters, losses and gradients stay float64 for the optimiser.
    """

    def __init__(self, x: np.ndarray, onehot: np.ndarray, sample_weight: np.ndarray, free: int) -> None:
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.onehot, self.free = onehot, free
        self.sample_weight = sample_weight / sample_weight.sum()
        self.total_weight = float(sample_weight.sum())

    def l2(self, c: float) -> float:
        """The L2 factor of ``C``: ``|W|^2 / 2`` over ``C`` times the total sample weight."""
        return 1.0 / (c * self.total_weight)

    def unpack(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All classes' weight rows and biases (the fixed row of the binary form is zero)."""
        dim = self.x.shape[1]
        weight = params[: self.free * dim].reshape(self.free, dim)
        bias = params[self.free * dim :]
        if self.free == 1:
            weight, bias = np.vstack([np.zeros(dim), weight]), np.concatenate([[0.0], bias])
        return weight, bias

    def __call__(self, params: np.ndarray, c: float) -> tuple[float, np.ndarray]:
        l2 = self.l2(c)
        weight, bias = self.unpack(params)
        logits = (self.x @ weight.T.astype(np.float32)).astype(np.float64) + bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        total = exp.sum(axis=1, keepdims=True)
        log_probs = logits - np.log(total)
        free_weight = weight[-self.free :]
        loss = -(self.sample_weight * (self.onehot * log_probs).sum(axis=1)).sum()
        loss += 0.5 * l2 * float((free_weight * free_weight).sum())
        residual = ((exp / total - self.onehot) * self.sample_weight[:, None])[:, -self.free :]
        grad_weight = (residual.T.astype(np.float32) @ self.x).astype(np.float64) + l2 * free_weight
        return loss, np.concatenate([grad_weight.ravel(), residual.sum(axis=0)])


class _DeviceLogisticLoss(_LogisticLoss):
    """The same loss and gradient computed with torch on an accelerator, where the features
    stay: only the parameters and the gradient cross to and from the host. (On a CPU, numpy's
    products on these skinny matrices are faster than torch's.)"""

    def __init__(
        self,
        x: np.ndarray,
        onehot: np.ndarray,
        sample_weight: np.ndarray,
        free: int,
        device: torch.device,
    ) -> None:
        super().__init__(x, onehot, sample_weight, free)
        self.device = device
        self.on_device = place(torch.from_numpy(self.x), device)
        self.onehot_on_device = place(torch.from_numpy(onehot), device)
        self.weight_on_device = place(torch.from_numpy(self.sample_weight), device)

    def __call__(self, params: np.ndarray, c: float) -> tuple[float, np.ndarray]:
        l2 = self.l2(c)
        weight, bias = self.unpack(params)
        w = place(torch.from_numpy(weight.astype(np.float32)), self.device)
        logits = (self.on_device @ w.T).double() + place(torch.from_numpy(bias), self.device)
        log_probs = torch.log_softmax(logits, dim=1)
        free_weight = weight[-self.free :]
        loss = -float(self.weight_on_device @ (self.onehot_on_device * log_probs).sum(dim=1))
        loss += 0.5 * l2 * float((free_weight * free_weight).sum())
        residual = ((log_probs.exp_() - self.onehot_on_device) * self.weight_on_device[:, None])[
            :, -self.free :
        ]
        grad_weight = (residual.T.float() @ self.on_device).double().cpu().numpy() + l2 * free_weight
        return loss, np.concatenate([grad_weight.ravel(), residual.sum(dim=0).cpu().numpy()])
