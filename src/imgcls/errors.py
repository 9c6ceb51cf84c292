"""Exceptions that carry a message meant for the user.

The CLI prints these without a traceback; anything else is a bug.
"""

from __future__ import annotations


class ImgclsError(Exception):
    """Base class: the message says what was expected, what was found and what to do."""


class DataError(ImgclsError):
    """The data folder, a split manifest or a class layout is unusable."""


class BackboneError(ImgclsError):
    """An unknown backbone name or an architecture that cannot be built."""


class WeightsError(ImgclsError):
    """Pretrained weights are unavailable or do not fit the architecture."""


class ModelFormatError(ImgclsError):
    """A saved model directory is missing files or was written by an incompatible version."""


class ConfigError(ImgclsError):
    """A configuration value or config file is invalid."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type's name): long library messages,
    such as torch's unpickling ones, become one readable line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
