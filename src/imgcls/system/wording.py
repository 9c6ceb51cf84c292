"""Counts and lists in messages, in plain English: ``1 image``, ``2 images``, ``ants and bees``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_IRREGULAR = {"entry": "entries", "class": "classes", "batch": "batches", "folder": "folders"}


def plural(noun: str) -> str:
    return _IRREGULAR.get(noun, noun + "s")


def count(n: int, noun: str) -> str:
    """``count(1, "image")`` -> ``1 image``; ``count(3, "class")`` -> ``3 classes``."""
    return f"{n} {noun if n == 1 else plural(noun)}"


def close_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates most like ``name`` (a mistyped choice), each once, closest first."""
    import difflib

    return difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=n, cutoff=0.6)


def join_names(names: Sequence[str], limit: int = 5, *, last: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c`` (``last="or"``: ``a, b or c``); each name once; past
    ``limit`` names, ``a, b, ... and 7 more``."""
    names = list(dict.fromkeys(str(n) for n in names))
    if len(names) > limit:
        return f"{', '.join(names[:limit])} and {len(names) - limit} more"
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} {last} {names[-1]}"
