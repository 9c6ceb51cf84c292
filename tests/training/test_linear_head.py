"""The logistic head: folded standardisation, binary case, CV-chosen regulariser."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from imgcls.training.linear_head import fit_linear_head


def _blobs(n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_classes, 16))
    y = np.repeat(np.arange(n_classes), 30)
    scales = rng.uniform(0.1, 10, 16)  # features on very different scales
    x = (centres[y] + rng.normal(0, 1, (len(y), 16))) * scales
    return x + 100.0, y


@pytest.mark.parametrize("n_classes", [2, 4])
def test_head_equals_standardised_logistic_regression_on_raw_features(n_classes):
    x, y = _blobs(n_classes)
    # One C: the solver stops at gradient entries <= 1e-4, which leaves less of a gap to the
    # exact optimum under moderate regularisation than under the weak one CV may choose.
    head = fit_linear_head(x, y, num_classes=n_classes, seed=0, c_grid=(0.1,))
    assert head.weight.shape == (n_classes, 16) and head.bias.shape == (n_classes,)
    assert head.c in head.cv_accuracy
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=head.c, max_iter=10_000, tol=1e-10).fit(scaler.transform(x), y)
    # both stop at gradient entries <= 1e-4, short of the exact optimum by about that much
    np.testing.assert_allclose(
        _probs(head.logits(x)), reference.predict_proba(scaler.transform(x)), atol=1e-3
    )
    assert (head.logits(x).argmax(1) == y).mean() > 0.9


def _probs(logits: np.ndarray) -> np.ndarray:
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_solver_reaches_sklearns_optimum(n_classes):
    """Run to a tight tolerance, imgcls's L-BFGS and sklearn's meet: the same objective (to 1e-5:
    the feature products run in float32)."""
    from imgcls.training.linear_head import _minimise

    x, y = _blobs(n_classes, seed=5)
    x = StandardScaler().fit_transform(x)
    weight, bias, _ = _minimise(x, y, 0.1, n_classes, False, gtol=1e-9)
    reference = LogisticRegression(C=0.1, max_iter=10_000, tol=1e-10).fit(x, y)
    np.testing.assert_allclose(_probs(x @ weight.T + bias), reference.predict_proba(x), atol=1e-5)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_balanced_fit_equals_sklearns_balanced_class_weights(n_classes):
    """The solver is ours (no sklearn import at run time); the objective must be sklearn's."""
    from imgcls.training.linear_head import _minimise

    x, y = _blobs(n_classes, seed=3)
    keep = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y != 0)[::3]])  # class 0 dominates
    x, y = StandardScaler().fit_transform(x[keep]), y[keep]
    weight, bias, _ = _minimise(x, y, 0.3, n_classes, True, gtol=1e-9)
    reference = LogisticRegression(C=0.3, max_iter=10_000, tol=1e-10, class_weight="balanced").fit(x, y)
    np.testing.assert_allclose(_probs(x @ weight.T + bias), reference.predict_proba(x), atol=1e-5)


def test_c_has_the_best_cv_accuracy_and_ties_go_to_the_lower_log_loss():
    from imgcls.training.linear_head import CScore, choose_c

    scores = {
        0.01: CScore(0.870, 0.40),
        0.03: CScore(0.875, 0.39),
        0.1: CScore(0.875, 0.37),
        1.0: CScore(0.86, 0.3),
    }
    assert choose_c(scores) == 0.1  # 0.03 and 0.1 tie on accuracy; 0.1 predicts better probabilities
    assert choose_c({0.1: CScore(float("nan"), float("nan"))}) == 0.1  # too small to cross-validate


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_accelerators_loss_is_the_cpus_loss(n_classes, monkeypatch):
    """On a GPU the solver's loss runs in torch where the features are; here, on the CPU's
    tensors, it must give the numpy loss's value and gradient, and the same fitted head."""
    import torch

    import imgcls.training.linear_head as head

    x, y = _blobs(n_classes, seed=3)
    x = StandardScaler().fit_transform(x)
    free = n_classes if n_classes > 2 else 1
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    args = (x, y, weights, free, n_classes)
    params = np.random.default_rng(1).normal(0, 0.1, free * (x.shape[1] + 1))
    value, grad = head._LogisticLoss(*args)(params, 0.3)
    on_device = head._DeviceLogisticLoss(*args, torch.device("cpu"))(params, 0.3)
    # Two BLAS libraries' float32 products: a last-bit difference in a logit moves the loss ~1e-8.
    assert on_device[0] == pytest.approx(value, rel=1e-6)
    np.testing.assert_allclose(on_device[1], grad, rtol=1e-5, atol=1e-9)
    cpu = fit_linear_head(x, y, num_classes=n_classes, seed=0)
    # The whole fit as an accelerator runs it (its loss, on the CPU's tensors).
    device_loss = head._DeviceLogisticLoss
    monkeypatch.setattr(head, "_LogisticLoss", lambda *a, **k: device_loss(*a, torch.device("cpu"), **k))
    accelerated = fit_linear_head(x, y, num_classes=n_classes, seed=0)
    assert accelerated.c == cpu.c
    np.testing.assert_allclose(accelerated.weight, cpu.weight, atol=1e-4)
