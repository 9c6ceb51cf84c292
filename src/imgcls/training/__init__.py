"""Turning features and images into a classifier: the linear head, the probe and fine-tune
strategies, the fine-tune plan, the epoch loop and its tasks, checkpoints, history, weight
interpolation and the CPU training fast path.
"""
