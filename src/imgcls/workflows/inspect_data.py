"""``imgcls inspect-data``: what a data set holds and what the augmentation makes of it.

Prints class counts per split (with the split that ``train`` would carve) and saves a grid:
one row per sampled image, labelled on the left with its class and file, the eval view first,
then augmented training views of it, each column named at the top.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from imgcls.config import GRID_ROWS, GRID_VIEWS
from imgcls.data.images import UnreadableImageError, load_rgb
from imgcls.data.preprocessing import Preprocessing
from imgcls.data.records import DatasetScan, ImageRecord
from imgcls.data.splits import assign_splits
from imgcls.data.transforms import eval_transform, train_transform
from imgcls.models.registry import get_backbone, resolve_preprocessing

CELL_GAP = 4
LABEL_PX = 170  # the left band naming each row's class and file
HEADER_PX = 22  # the top band naming each column
FONT_PX = 13


@dataclass
class DataSummary:
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "counts": self.counts}

    def table(self) -> str:
        splits = list(self.counts)
        width = max(len(c) for c in [*self.classes, "class", "total"]) + 2
        lines = ["class".ljust(width) + "".join(f"{s:>8}" for s in splits)]
        for name in [*self.classes, "total"]:
            cells = [
                sum(v.values()) if name == "total" else self.counts[s].get(name, 0)
                for s, v in ((s, self.counts[s]) for s in splits)
            ]
            lines.append(name.ljust(width) + "".join(f"{c:>8}" for c in cells))
        return "\n".join(lines)


def summarise(
    scan: DatasetScan, *, val_fraction: float, test_fraction: float | None, seed: int
) -> DataSummary:
    """Images per class in each split, splitting as ``train`` would (unreadable files included)."""
    splits = assign_splits(scan.records, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    counts: dict[str, Counter] = {}
    for record, split in zip(scan.records, splits, strict=True):
        counts.setdefault(split, Counter())[record.label] += 1
    ordered = {s: dict(sorted(counts[s].items())) for s in ("train", "val", "test") if s in counts}
    return DataSummary(scan.classes, ordered)


def augmentation_grid(
    scan: DatasetScan,
    output: Path,
    *,
    backbone: str,
    augment: str,
    input_size: int | None = None,
    rows: int = GRID_ROWS,
    views: int = GRID_VIEWS,
    seed: int = 0,
) -> Path:
    """Save a PNG grid: per row one image's eval view, then ``views`` augmented views."""
    spec = get_backbone(backbone)
    pre = resolve_preprocessing(spec, input_size=input_size, for_features=False)
    augmented, plain = train_transform(pre, augment), eval_transform(pre)
    torch.manual_seed(seed)
    grid_rows, names = [], []
    for record in _sample_records(scan, rows, seed):
        try:
            image = load_rgb(scan.absolute(record), min_side=pre.resize_size)
        except UnreadableImageError:
            continue
        cells = [plain(image)] + [augmented(image) for _ in range(views)]
        grid_rows.append([_to_pixels(cell, pre) for cell in cells])
        names.append((record.label, record.path))
    if not grid_rows:
        raise UnreadableImageError(scan.source, "no readable image to show")
    output.parent.mkdir(parents=True, exist_ok=True)
    columns = ["eval view", *(f"augmented {i}" for i in range(1, views + 1))]
    _label(_compose(grid_rows, pre.input_size), names, columns, pre.input_size).save(output)
    return output


def _sample_records(scan: DatasetScan, rows: int, seed: int) -> list[ImageRecord]:
    """One image per class, round-robin, in a seeded order."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[ImageRecord]] = {}
    for record in scan.records:
        by_class.setdefault(record.label, []).append(record)
    pools = {c: [p[i] for i in rng.permutation(len(p))] for c, p in sorted(by_class.items())}
    picked: list[ImageRecord] = []
    while len(picked) < rows and any(pools.values()):
        for pool in pools.values():
            if pool and len(picked) < rows:
                picked.append(pool.pop())
    return picked


def _to_pixels(tensor: torch.Tensor, pre: Preprocessing) -> np.ndarray:
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    pixels = (tensor * std + mean).clamp(0, 1).mul(255).round().byte()
    return pixels.permute(1, 2, 0).numpy()


def _compose(rows: list[list[np.ndarray]], size: int) -> Image.Image:
    """The cells on a white canvas, with room for the labels at the left and top."""
    step = size + CELL_GAP
    canvas = np.full((HEADER_PX + len(rows) * step, LABEL_PX + len(rows[0]) * step, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            top, left = HEADER_PX + r * step, LABEL_PX + c * step
            canvas[top : top + size, left : left + size] = cell
    return Image.fromarray(canvas)


def _label(grid: Image.Image, rows: list[tuple[str, str]], columns: list[str], size: int) -> Image.Image:
    """Each row's class and file name in the left band, each column's name in the top band."""
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=FONT_PX)
    step = size + CELL_GAP
    for c, name in enumerate(columns):
        draw.text((LABEL_PX + c * step, 4), _fit(draw, name, size, font), fill=(60, 60, 60), font=font)
    for r, (label, path) in enumerate(rows):
        top = HEADER_PX + r * step
        draw.text((4, top + 2), _fit(draw, label, LABEL_PX - 8, font), fill=(0, 0, 0), font=font)
        name = _fit(draw, Path(path).name, LABEL_PX - 8, font)
        draw.text((4, top + 4 + FONT_PX), name, fill=(90, 90, 90), font=font)
    return grid


def _fit(draw: ImageDraw.ImageDraw, text: str, width: float, font: ImageFont.FreeTypeFont) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
