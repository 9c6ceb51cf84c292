"""Deprecated location of the ONNX Runtime classifier: use ``imgcls.inference.onnx_runtime``."""

from __future__ import annotations

import warnings

from imgcls.inference.onnx_runtime import OnnxClassifier, find_onnx_file

__all__ = ["OnnxClassifier", "find_onnx_file"]

warnings.warn(
    "imgcls.onnx_runtime moved to imgcls.inference.onnx_runtime; the old name will be removed",
    DeprecationWarning,
    stacklevel=2,
)
