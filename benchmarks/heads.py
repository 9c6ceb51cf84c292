"""The probe's three heads side by side: cross-validated on the same folds, then trained once
on the train split and scored on val (and test, once), each exported to ONNX with its parity
check. Also shows where the linear head's C landed in its grid.

    .venv/bin/python benchmarks/heads.py                 # hymenoptera and clothing_small
    .venv/bin/python benchmarks/heads.py --datasets hymenoptera

Prints a markdown report and puts it on ``docs/benchmarks.md`` between the page's
``<!-- heads:start -->`` and ``<!-- heads:end -->`` markers. Features come from one cache
shared by every step (the heads are what is measured). Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _page import DATASETS, put_on_page, stamp

HEADS = ("linear", "mlp", "knn")


def imgcls(*args: str, cache: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "imgcls", *args, "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "IMGCLS_CACHE_DIR": str(cache)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"imgcls {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def measure(dataset: str, work: Path) -> dict:
    data = DATASETS / dataset
    cache = work / "cache"
    _, out = imgcls("compare", str(data), "--heads", ",".join(HEADS), "--json", cache=cache)
    comparison = json.loads(out)
    trained = {}
    for head in HEADS:
        run = work / f"{dataset}-{head}"
        seconds, _ = imgcls("train", str(data), "-o", str(run), "--head", head, cache=cache)
        metrics = json.loads((run / "metrics.json").read_text())
        _, exported = imgcls("export", str(run), "--format", "onnx", "--json", cache=cache)
        trained[head] = {
            "wall_s": seconds,
            "val": metrics["val"]["accuracy"],
            "test": metrics.get("test", {}).get("accuracy"),
            "head": metrics["head"],
            "export": json.loads(exported),
        }
    return {"dataset": dataset, "cv": comparison, "trained": trained}


def markdown(results: list[dict], command: str) -> str:
    lines = [
        stamp(command),
        "",
        "| data set | head | cv accuracy (5 folds) | cv head time s | val acc | test acc | "
        "chosen | ONNX max logit diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        candidates = {c["head"]: c for c in result["cv"]["candidates"]}
        for head in HEADS:
            cv, trained = candidates[head], result["trained"][head]
            acc = cv["summary"]["accuracy"]
            test = f"{trained['test']:.4f}" if trained["test"] is not None else "-"
            lines.append(
                f"| {result['dataset']} | {head} | {acc['mean']:.4f} ± {acc['std']:.4f} | "
                f"{cv['timing']['fit_s']:.1f} | {trained['val']:.4f} | {test} | {_chosen(trained['head'])} | "
                f"{trained['export']['max_abs_logit_diff']:.1e} |"
            )
    lines.append("")
    for result in results:
        test = result["cv"]["paired_test"]
        lines.append(
            f"- {result['dataset']}: {test['a']} vs {test['b']}, mean accuracy difference "
            f"{test['mean_difference']:+.4f}, p = {test['p_value']:.3f} (corrected resampled t-test)."
        )
        linear = result["trained"]["linear"]["head"]
        grid = ", ".join(f"{c}: {a:.3f}" for c, a in linear["cv_accuracy"].items())
        note = linear.get("grid_note") or "inside the grid"
        lines.append(
            f"- {result['dataset']}: linear C = {linear['C']} ({note}); inner-CV accuracy by C: {grid}."
        )
    return "\n".join(lines)


def _chosen(head: dict) -> str:
    if head["type"] == "mlp":
        return f"{head['hidden']} units, dropout {head['dropout']}, {head['steps']} steps"
    if head["type"] == "knn":
        return f"k = {head['k']}"
    return f"C = {head['C']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="hymenoptera,clothing_small")
    args = parser.parse_args()
    command = "python benchmarks/heads.py" + (
        f" --datasets {args.datasets}" if args.datasets != "hymenoptera,clothing_small" else ""
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(name, Path(tmp)) for name in args.datasets.split(",")]
    text = markdown(results, command)
    print(text)
    put_on_page("heads", text)


if __name__ == "__main__":
    main()
