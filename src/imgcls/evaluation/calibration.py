"""Temperature scaling: one scalar that makes predicted probabilities mean what they say.

Fitted on held-out (validation) logits by minimising the negative log-likelihood; dividing
logits by a positive temperature never changes the arg-max, so accuracy is unchanged.
"""

from __future__ import annotations

import numpy as np

LOG_T_BOUNDS = (-4.0, 4.0)  # temperatures from 0.02 to 55


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)``."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    result = minimize_scalar(
        lambda log_t: _nll(logits / np.exp(log_t), y_true), bounds=LOG_T_BOUNDS, method="bounded"
    )
    return float(np.exp(result.x))


def _nll(logits: np.ndarray, y_true: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y_true)), y_true].mean())
