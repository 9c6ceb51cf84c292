"""What ``imgcls doctor`` writes: ``doctor.json``, ``issues.csv``, ``doctor.html`` and the clean
manifest (``write_clean``)."""

from __future__ import annotations

import logging
from pathlib import Path

from imgcls._files import write_csv_atomic, write_json
from imgcls.data.records import TRAIN, DatasetScan
from imgcls.data.sources.manifests import listed_path
from imgcls.errors import DataError
from imgcls.evaluation.report import Card, write_gallery_page
from imgcls.system.wording import count
from imgcls.workflows.doctor.findings import CLEANED_KINDS, Diagnosis, DoctorImages

log = logging.getLogger(__name__)

DOCTOR_HTML, DOCTOR_JSON, ISSUES_CSV = "doctor.html", "doctor.json", "issues.csv"
DOCTOR_FILES = (DOCTOR_HTML, DOCTOR_JSON, ISSUES_CSV)
GALLERY_PER_KIND = 48  # findings shown per kind on the page (all are in issues.csv)


def write_outputs(folder: Path, diagnosis: Diagnosis, images: DoctorImages) -> Path:
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


def _write_page(path: Path, diagnosis: Diagnosis, images: DoctorImages) -> None:
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


def write_clean_manifest(
    path: Path, scan: DatasetScan, images: DoctorImages, diagnosis: Diagnosis, *, relabel: bool
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
    rows, outside = [], 0
    for record, ref in zip(images.records, images.refs, strict=True):
        if record.path in dropped:
            continue
        listed = listed_path(ref, path)
        outside += listed is None
        rows.append([listed or str(Path(ref).absolute()), relabelled.get(record.path, record.label),
                     record.folder_split or ""])  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(path, ["path", "label", "split"], rows)
    if outside:
        log.warning(
            "%s lists %s outside its own folder (by absolute path): train on it with "
            "--allow-outside-root, or write it in a folder that holds the data",
            path, count(outside, "image"),
        )  # fmt: skip
    log.info(
        "wrote %s to %s (%s left out, %s relabelled)",
        count(len(rows), "image"), path, len(images.records) - len(rows), len(relabelled),
    )  # fmt: skip
