"""Copies of one picture for ``imgcls doctor``: the similarity thresholds calibrated on copies
made of the data set's own images, and the groups of copies with what they mean (a
duplicate, leakage between splits, or conflicting labels)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from imgcls.data.images import load_rgb
from imgcls.evaluation.duplicates import DuplicateGroup, embedding_pairs, group_pairs, hash_pairs, leaks
from imgcls.inference.encoder import Encoder
from imgcls.inference.similarity import normalised
from imgcls.workflows.doctor.findings import DoctorImages, Finding

CALIBRATION_IMAGES = 32  # images copied (three ways each) to calibrate the thresholds
HASH_NEAR = 4  # perceptual-hash bits two copies of one picture differ in, at most


def calibrate(
    encoder: Encoder, images: DoctorImages, sims: np.ndarray, idx: np.ndarray, seed: int
) -> dict[str, Any]:
    """How similar copies of one picture are, measured on copies of a sample of the images,
    and how similar different pictures of this data set can be.

    ``threshold``: embeddings at least this cosine-similar are copies. It is where 95% of the
    recompressed (JPEG quality 70) and cropped (to 90%) copies reach, raised where needed
    above 99.5% of the images' nearest different pictures (neighbours whose perceptual hashes
    differ in more than twice ``HASH_NEAR`` bits): in a data set of look-alike pictures the
    embeddings alone cannot tell copies, and the other evidence has to. Shrunk copies lose
    detail and their embeddings move further, so they are matched by the perceptual hash,
    with ``hash_threshold`` (95% of half-size JPEG copies reach it) as the embedding check
    that keeps two different pictures with similar hashes apart."""
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(images.refs), size=min(CALIBRATION_IMAGES, len(images.refs)), replace=False)
    originals = [load_rgb(images.refs[i]) for i in sample]
    made = {
        "recompressed": [_jpeg(image) for image in originals],
        "cropped": [_cropped(image) for image in originals],
        "half size": [_jpeg(_half_size(image)) for image in originals],
    }
    similarity = {
        how: np.sum(normalised(encoder.embed_images(copies)) * images.features[sample], axis=1)
        for how, copies in made.items()
    }
    copies = float(np.percentile(np.concatenate([similarity["recompressed"], similarity["cropped"]]), 5))
    different = _nearest_different(images, sims, idx)
    background = float(np.percentile(different, 99.5)) if len(different) else -1.0
    threshold = min(max(copies, background), 0.9999)
    return {
        "threshold": round(threshold, 4),
        "hash_threshold": round(min(float(np.percentile(similarity["half size"], 5)), threshold), 4),
        "hash_bits": HASH_NEAR,
        "copies_made": {how: len(made_copies) for how, made_copies in made.items()},
        "copy_similarity_median": {how: round(float(np.median(v)), 4) for how, v in similarity.items()},
        "copies_5th_percentile": round(copies, 4),
        "different_pictures_99_5th_percentile": round(background, 4),
        "share_of_images_with_a_neighbour_above": round(float(np.mean(sims[:, 1] >= threshold)), 4),
    }


def _nearest_different(images: DoctorImages, sims: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Each image's similarity to its most similar neighbour that is plainly another picture
    (a perceptual hash more than ``2 * HASH_NEAR`` bits away)."""
    found = []
    for i, (row_sims, row_idx) in enumerate(zip(sims, idx, strict=True)):
        for sim, j in zip(row_sims, row_idx, strict=True):
            if j != i and images.prints[i].distance(images.prints[int(j)]) > 2 * HASH_NEAR:
                found.append(float(sim))
                break
    return np.array(found)


def _jpeg(image: Image.Image, quality: int = 70) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _half_size(image: Image.Image) -> Image.Image:
    return image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BILINEAR)


def _cropped(image: Image.Image, keep: float = 0.9) -> Image.Image:
    dx, dy = round(image.width * (1 - keep) / 2), round(image.height * (1 - keep) / 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def duplicate_groups(
    images: DoctorImages, sims: np.ndarray, idx: np.ndarray, calibration: dict[str, Any]
) -> list[DuplicateGroup]:
    """Groups of copies: the same content digest, embeddings at or above the calibrated
    threshold, or perceptual hashes within ``HASH_NEAR`` bits with embeddings at or above the
    hash threshold."""
    pairs = embedding_pairs(sims, idx, calibration["threshold"])
    for (i, j), _ in hash_pairs([p.dhash for p in images.prints], HASH_NEAR).items():
        similarity = float(images.features[i] @ images.features[j])
        if similarity >= calibration["hash_threshold"]:
            pairs[(i, j)] = max(pairs.get((i, j), -1.0), similarity)
    by_content: dict[str, list[int]] = {}
    for i, p in enumerate(images.prints):
        by_content.setdefault(p.content, []).append(i)
    for same in by_content.values():
        pairs.update({(same[0], j): 1.0 for j in same[1:]})
    components = group_pairs(pairs, len(images.records))
    group_of = {i: g for g, members in enumerate(components) for i in members}
    lowest = [float("inf")] * len(components)
    for (i, _), similarity in pairs.items():  # both ends of a pair are in one component
        lowest[group_of[i]] = min(lowest[group_of[i]], similarity)
    return [
        DuplicateGroup(tuple(members), len({images.prints[i].content for i in members}) == 1, lowest[g])
        for g, members in enumerate(components)
    ]


def duplicate_findings(images: DoctorImages, groups: list[DuplicateGroup]) -> list[Finding]:
    labels = [r.label for r in images.records]
    findings = []
    for group in groups:
        rows = list(group.members)
        splits = [images.splits[i] for i in rows]
        what = "identical files" if group.exact else f"copies (cosine similarity >= {group.similarity:.3f})"
        if len(group.labels(labels)) > 1:
            kind, action = "conflicting labels", "decide the right label, then keep one copy"
        elif leaks(splits):
            kind, action = "leakage", "remove the held-out copies (they are in training too)"
        else:
            kind, action = "duplicate", "keep one copy"
        findings.append(
            Finding(
                kind,
                images.ids(rows),
                splits,
                [labels[i] for i in rows],
                group.similarity,
                action,
                detail=what,
            )
        )
    return findings
