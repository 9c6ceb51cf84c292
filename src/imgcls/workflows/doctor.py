"""``imgcls doctor``: what is wrong with a data set, before training on it.

Recipe: scan the source -> embed every image with the backbone (through the feature cache)
and fingerprint it (content digest, perceptual hash, size, colour) -> calibrate the
near-duplicate threshold on copies made of a sample of the images -> find duplicates and
leakage, likely mislabels (confident learning on out-of-fold probabilities of the linear
probe, on the folds ``imgcls cv`` uses), outliers, class imbalance and odd images -> write
``doctor.json``, ``issues.csv`` and ``doctor.html``, and (``write_clean``) a manifest without
what was found. Nothing in the data is moved or deleted.
"""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgcls._files import write_csv_atomic, write_json
from imgcls.config import FOLDS, TrainConfig, with_settings
from imgcls.data.fingerprints import Fingerprint, fingerprints
from imgcls.data.images import ImageRef, load_rgb
from imgcls.data.records import TRAIN, DatasetScan, ImageRecord
from imgcls.data.sources import open_source
from imgcls.data.splits import assign_folds, assign_splits
from imgcls.errors import DataError
from imgcls.evaluation.duplicates import DuplicateGroup, embedding_pairs, group_pairs, hash_pairs, leakage
from imgcls.evaluation.label_issues import LabelIssues, find_label_issues
from imgcls.evaluation.metrics import softmax
from imgcls.evaluation.outliers import find_outliers
from imgcls.evaluation.report import Card, write_gallery_page
from imgcls.inference.encoder import Encoder, open_encoder
from imgcls.inference.similarity import nearest, normalised
from imgcls.models.features import default_cache_dir
from imgcls.system.progress import Progress
from imgcls.system.wording import count
from imgcls.training.heads import fit_head

log = logging.getLogger(__name__)

DOCTOR_HTML, DOCTOR_JSON, ISSUES_CSV = "doctor.html", "doctor.json", "issues.csv"
NEIGHBOURS = 10  # nearest images looked at per image: duplicates, hash checks, outliers
CALIBRATION_IMAGES = 32  # images copied (two ways each) to calibrate the duplicate threshold
HASH_NEAR = 4  # perceptual-hash bits two copies of one picture differ in, at most
IMBALANCE_RATIO = 5.0  # largest class over smallest, from which imbalance is a finding
EXTREME_ASPECT = 4.0  # longer side over shorter side
TINY_FRACTION = 0.25  # of the data set's median shorter side, below which an image is tiny
MIN_TINY_PX = 16
GALLERY_PER_KIND = 48  # findings shown per kind on the page (all are in issues.csv)
KINDS = (
    "unreadable", "ignored", "conflicting labels", "leakage", "duplicate", "mislabel", "outlier",
    "imbalance", "tiny", "extreme aspect", "grey",
)  # fmt: skip
# What --write-clean leaves out (mislabels are relabelled instead with --relabel).
CLEANED_KINDS = ("conflicting labels", "leakage", "duplicate", "mislabel", "outlier")


@dataclass
class Finding:
    kind: str
    ids: list[str]  # record ids of the images concerned
    splits: list[str]
    labels: list[str]
    score: float  # how sure or how bad; findings of a kind are ranked by it, highest first
    action: str
    suggested_label: str | None = None
    detail: str = ""


@dataclass
class Diagnosis:
    data: str
    backbone: str
    images: int
    findings: list[Finding]
    leakage: dict[str, dict[str, Any]]
    calibration: dict[str, Any]
    label_check: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)
    output: Path | None = None
    # The out-of-fold class probabilities behind the mislabel check, with each row's record id
    # and label index (for comparing other methods on the same probabilities).
    out_of_fold: np.ndarray | None = None
    out_of_fold_ids: list[str] = field(default_factory=list)
    out_of_fold_labels: np.ndarray | None = None

    def counts(self) -> dict[str, int]:
        found = Counter(f.kind for f in self.findings)
        return {kind: found[kind] for kind in KINDS if found[kind]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "backbone": self.backbone,
            "images": self.images,
            "counts": self.counts(),
            "leakage": self.leakage,
            "calibration": self.calibration,
            "label_check": self.label_check,
            "timing": self.timing,
            "findings": [asdict(f) for f in self.findings],
        }


@dataclass
class _Images:
    """The readable images: their records, references, splits, features and fingerprints."""

    records: list[ImageRecord]
    refs: list[ImageRef]
    splits: list[str]
    features: np.ndarray
    prints: list[Fingerprint]
    classes: list[str]

    @property
    def labels(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[r.label] for r in self.records], dtype=np.int64)

    def ids(self, rows: Iterable[int]) -> list[str]:
        return [self.records[i].path for i in rows]


def doctor(
    data: str | Path | Any,
    output: str | Path | None = None,
    *,
    model: str | Path | None = None,
    config: TrainConfig | None = None,
    folds: int = FOLDS,
    write_clean: str | Path | None = None,
    relabel: bool = False,
    **settings: Any,
) -> Diagnosis:
    """Check a data set for broken files, duplicates, leakage, likely mislabels and outliers.

    Args:
        data: any source ``train`` reads.
        output: folder for ``doctor.html``, ``doctor.json`` and ``issues.csv`` (``None``: none).
        model: a run directory or backbone name whose features to use (default: ``backbone``).
        config: settings (``backbone``, ``seed``, ``val_fraction`` ...); ``settings`` override them.
        folds: folds of the out-of-fold probabilities behind the mislabel check.
        write_clean: write a manifest of the data without the findings (see ``CLEANED_KINDS``).
        relabel: in that manifest, give likely mislabels their suggested label instead of
            leaving them out.
    """
    started = time.perf_counter()
    cfg = with_settings(config, settings)
    scan = open_source(data, data_format=cfg.data_format, label_set=cfg.label_set, min_classes=1)
    encoder = open_encoder(
        model or cfg.backbone, weights=cfg.weights, input_size=cfg.input_size, pretrained=cfg.pretrained
    )
    images, findings = _read(scan, encoder, cfg)
    timing = {"read_s": round(time.perf_counter() - started, 2)}
    sims, idx = nearest(images.features, images.features, k=NEIGHBOURS + 1)
    calibration = _calibrate(encoder, images, sims, idx, cfg.seed)
    groups = _duplicate_groups(images, sims, idx, calibration)
    findings += _duplicate_findings(images, groups)
    issues, label_check, probs = _label_issues(images, folds=folds, seed=cfg.seed)
    if issues is not None:
        findings += _mislabel_findings(images, issues)
    findings += _outlier_findings(images, sims)
    findings += _odd_image_findings(images)
    timing["total_s"] = round(time.perf_counter() - started, 2)
    diagnosis = Diagnosis(
        data=scan.location,
        backbone=encoder.origin["backbone"],
        images=len(images.records),
        findings=_ordered(findings),
        leakage=leakage(groups, images.splits),
        calibration=calibration,
        label_check=label_check,
        timing=timing,
        out_of_fold=probs,
        out_of_fold_ids=images.ids(range(len(images.records))),
        out_of_fold_labels=images.labels,
    )
    if output is not None:
        diagnosis.output = _write_outputs(Path(output), diagnosis, images)
    if write_clean is not None:
        _write_clean_manifest(Path(write_clean), scan, images, diagnosis, relabel=relabel)
    log.info("doctor: %s", ", ".join(f"{k} {v}" for k, v in diagnosis.counts().items()) or "no findings")
    return diagnosis


def _read(scan: DatasetScan, encoder: Encoder, cfg: TrainConfig) -> tuple[_Images, list[Finding]]:
    """Embed and fingerprint every image; the unreadable ones and the ignored entries are findings."""
    splits = assign_splits(
        scan.records, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )
    refs = [scan.absolute(r) for r in scan.records]
    cache = (Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()) if cfg.use_cache else None
    extraction = encoder.embed_files(refs, cache_dir=cache, progress=Progress("extracting features"))
    prints, failures = fingerprints(refs, progress=Progress("fingerprinting"))
    failures.update(extraction.failures)
    findings = [
        Finding("unreadable", [scan.records[i].path], [splits[i]], [scan.records[i].label], 1.0,
                "repair or remove the file", detail=reason)
        for i, reason in sorted(failures.items())
    ]  # fmt: skip
    findings += [
        Finding("ignored", [entry], [], [], 0.0, "nothing: it is not read", detail="not used as an image")
        for entry in scan.ignored
    ]
    keep = [i for i in range(len(refs)) if i not in failures]
    feature_row = np.cumsum(extraction.readable) - 1
    images = _Images(
        records=[scan.records[i] for i in keep],
        refs=[refs[i] for i in keep],
        splits=[splits[i] for i in keep],
        features=normalised(extraction.features[feature_row[keep]]) if keep else np.zeros((0, 0), np.float32),
        prints=[prints[i] for i in keep],  # type: ignore[misc]
        classes=scan.classes,
    )
    if len(images.records) < 2:
        raise DataError(f"{scan.source} has fewer than 2 readable images: nothing to compare")
    return images, findings


def _calibrate(
    encoder: Encoder, images: _Images, sims: np.ndarray, idx: np.ndarray, seed: int
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


def _nearest_different(images: _Images, sims: np.ndarray, idx: np.ndarray) -> np.ndarray:
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


def _duplicate_groups(
    images: _Images, sims: np.ndarray, idx: np.ndarray, calibration: dict[str, Any]
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
    groups = []
    for members in group_pairs(pairs, len(images.records)):
        inside = [s for (i, j), s in pairs.items() if i in members and j in members]
        exact = len({images.prints[i].content for i in members}) == 1
        groups.append(DuplicateGroup(tuple(members), exact, min(inside)))
    return groups


def _duplicate_findings(images: _Images, groups: list[DuplicateGroup]) -> list[Finding]:
    labels = [r.label for r in images.records]
    findings = []
    for group in groups:
        rows = list(group.members)
        splits = [images.splits[i] for i in rows]
        what = "identical files" if group.exact else f"copies (cosine similarity >= {group.similarity:.3f})"
        if len(group.labels(labels)) > 1:
            kind, action = "conflicting labels", "decide the right label, then keep one copy"
        elif TRAIN in splits and len(set(splits)) > 1:
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


def _label_issues(
    images: _Images, *, folds: int, seed: int
) -> tuple[LabelIssues | None, dict[str, Any], np.ndarray | None]:
    """Confident learning on out-of-fold probabilities of the linear probe."""
    counts = Counter(r.label for r in images.records)
    smallest = min(counts[c] for c in images.classes) if len(counts) == len(images.classes) else 0
    if len(images.classes) < 2 or smallest < 2:
        reason = "needs at least two classes with two readable images each"
        log.warning("mislabel check skipped: it %s", reason)
        return None, {"skipped": reason}, None
    folds = min(folds, smallest)
    probs = out_of_fold_probabilities(images.features, images.labels, images.records, folds=folds, seed=seed)
    issues = find_label_issues(images.labels, probs)
    return issues, _label_check(images, issues, probs, folds), probs


def _label_check(images: _Images, issues: LabelIssues, probs: np.ndarray, folds: int) -> dict[str, Any]:
    accuracy = float((probs.argmax(axis=1) == images.labels).mean())
    return {
        "method": "confident learning on out-of-fold probabilities of the linear probe",
        "folds": folds,
        "out_of_fold_accuracy": accuracy,
        "flagged": int(issues.flagged.sum()),
        "thresholds": {c: float(t) for c, t in zip(images.classes, issues.thresholds, strict=True)},
    }


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, records: list[ImageRecord], *, folds: int, seed: int
) -> np.ndarray:
    """Class probabilities of every image from a linear probe that did not train on it, on the
    stratified seeded folds ``imgcls cv`` deals."""
    assignment = np.array(assign_folds(records, folds=folds, seed=seed))
    num_classes = int(labels.max()) + 1
    probs = np.zeros((len(labels), num_classes))
    progress = Progress("out-of-fold probabilities", unit="folds")
    progress.start(0, folds)
    for fold in range(folds):
        held = assignment == fold
        head = fit_head(
            "linear", features[~held], labels[~held], num_classes=num_classes, seed=seed, balanced=False
        )
        probs[held] = softmax(head.logits(features[held]))
        progress(fold + 1, folds)
    return probs


def _mislabel_findings(images: _Images, issues: LabelIssues) -> list[Finding]:
    findings = []
    for i in issues.flagged_ranked():
        suggested = images.classes[int(issues.suggested[i])]
        confidence = float(issues.self_confidence[i])
        findings.append(
            Finding("mislabel", images.ids([int(i)]), [images.splits[i]], [images.records[i].label],
                    round(1.0 - confidence, 4), f"check the label (the model says {suggested})",
                    suggested_label=suggested, detail=f"probability of its label {confidence:.3f}")
        )  # fmt: skip
    return findings


def _outlier_findings(images: _Images, sims: np.ndarray) -> list[Finding]:
    outliers = find_outliers(sims)
    return [
        Finding("outlier", images.ids([int(i)]), [images.splits[i]], [images.records[i].label],
                round(float(outliers.z[i]), 2), "check that it belongs in the data set",
                detail=f"far from every other image (robust z {outliers.z[i]:.1f})")
        for i in np.flatnonzero(outliers.flagged)
    ]  # fmt: skip


def _odd_image_findings(images: _Images) -> list[Finding]:
    counts = Counter(r.label for r in images.records)
    findings = []
    present = [counts[c] for c in images.classes]
    if min(present) and max(present) / min(present) >= IMBALANCE_RATIO:
        detail = ", ".join(f"{c} {counts[c]}" for c in images.classes)
        findings.append(
            Finding("imbalance", [], [], list(images.classes), max(present) / min(present),
                    "use `class_weights=auto`, or add images of the small classes", detail=detail)
        )  # fmt: skip
    short = np.array([min(p.width, p.height) for p in images.prints])
    tiny = max(MIN_TINY_PX, TINY_FRACTION * float(np.median(short)))
    mostly_colour = np.mean([p.grey for p in images.prints]) < 0.2
    for i, p in enumerate(images.prints):
        aspect = max(p.width, p.height) / max(1, min(p.width, p.height))
        odd = []
        if min(p.width, p.height) < tiny:
            odd.append(("tiny", f"{p.width}x{p.height} px", tiny / max(1, min(p.width, p.height))))
        if aspect >= EXTREME_ASPECT:
            odd.append(("extreme aspect", f"{p.width}x{p.height} px", aspect))
        if p.grey and mostly_colour:
            odd.append(("grey", "a grey image among colour ones", 1.0))
        findings += [
            Finding(kind, images.ids([i]), [images.splits[i]], [images.records[i].label], round(score, 3),
                    "check that it is usable", detail=detail)
            for kind, detail, score in odd
        ]  # fmt: skip
    return findings


def _ordered(findings: list[Finding]) -> list[Finding]:
    rank = {kind: n for n, kind in enumerate(KINDS)}
    return sorted(findings, key=lambda f: (rank[f.kind], -f.score))


def _write_outputs(folder: Path, diagnosis: Diagnosis, images: _Images) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / DOCTOR_JSON, diagnosis.to_dict())
    write_csv_atomic(
        folder / ISSUES_CSV,
        ["kind", "ids", "splits", "labels", "score", "suggested_label", "action", "detail"],
        (
            [f.kind, ";".join(f.ids), ";".join(f.splits), ";".join(f.labels), f.score,
             f.suggested_label or "", f.action, f.detail]
            for f in diagnosis.findings
        ),
    )  # fmt: skip
    _write_page(folder / DOCTOR_HTML, diagnosis, images)
    return folder


def _write_page(path: Path, diagnosis: Diagnosis, images: _Images) -> None:
    refs = {r.path: ref for r, ref in zip(images.records, images.refs, strict=True)}
    sections = []
    for kind, n in diagnosis.counts().items():
        shown = [f for f in diagnosis.findings if f.kind == kind][:GALLERY_PER_KIND]
        cards = []
        for f in shown:
            lines = [f.detail, f.action]
            if not f.ids:
                cards.append(Card(None, (kind, *lines)))
            for n_id, row_id in enumerate(f.ids):
                ref = refs.get(row_id)
                where = f"{f.labels[n_id]} ({f.splits[n_id]})" if n_id < len(f.splits) else ""
                cards.append(Card(ref if isinstance(ref, Path) else None, (row_id, where, *lines)))
        more = f", first {len(shown)} shown (all in {ISSUES_CSV})" if n > len(shown) else ""
        sections.append((f"{kind}: {count(n, 'finding')}{more}", cards))
    leaks = "; ".join(
        f"{pair}: {v['with_copy_in_train']} of {v['images']}" for pair, v in diagnosis.leakage.items()
    )
    facts = [
        ("data", diagnosis.data),
        ("backbone", diagnosis.backbone),
        ("images read", str(diagnosis.images)),
        ("findings", ", ".join(f"{k} {v}" for k, v in diagnosis.counts().items()) or "none"),
        ("held-out images with a copy in train", leaks or "no held-out split"),
        ("duplicate threshold (cosine)", f"{diagnosis.calibration['threshold']:.4f}"),
    ]
    write_gallery_page(
        path, title=f"imgcls doctor: {Path(diagnosis.data).name}", sections=sections, facts=facts
    )


def _write_clean_manifest(
    path: Path, scan: DatasetScan, images: _Images, diagnosis: Diagnosis, *, relabel: bool
) -> None:
    """``path,label,split`` of the readable images, less the findings of ``CLEANED_KINDS``:
    of each group of copies the first training copy (or the first copy) stays, unless its
    members disagree on the label; likely mislabels go, or take their suggested label."""
    if scan.format not in ("folder", "manifest"):
        raise DataError(f"`write_clean` writes a manifest of files; {scan.source} is a {scan.format} source")
    dropped: set[str] = set()
    relabelled: dict[str, str] = {}
    for f in diagnosis.findings:
        if f.kind == "mislabel" and relabel and f.suggested_label:
            relabelled[f.ids[0]] = f.suggested_label
        elif f.kind in ("duplicate", "leakage"):
            keep = next((i for i, s in zip(f.ids, f.splits, strict=True) if s == TRAIN), f.ids[0])
            dropped.update(i for i in f.ids if i != keep)
        elif f.kind in CLEANED_KINDS:
            dropped.update(f.ids)
    rows = [
        [str(ref), relabelled.get(r.path, r.label), r.folder_split or ""]
        for r, ref in zip(images.records, images.refs, strict=True)
        if r.path not in dropped
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(path, ["path", "label", "split"], rows)
    log.info(
        "wrote %s to %s (%s left out, %s relabelled)",
        count(len(rows), "image"), path, len(images.records) - len(rows), len(relabelled),
    )  # fmt: skip
