"""Judging predictions: classification metrics, statistics over folds and paired predictions,
temperature calibration, and the self-contained HTML report with its charts. Pure functions of
labels and probabilities; no networks.
"""
