"""The commands that reuse a network's features: ``embed`` and ``similar``."""

from __future__ import annotations

import argparse

from imgcls.cli._options import (
    DATA_HELP,
    add_device_option,
    add_engine_options,
    add_forward_batch_option,
    add_source_options,
    positive_int,
    print_json,
    source_keywords,
)


def add_embed(p: argparse.ArgumentParser) -> None:
    from imgcls.config import DEFAULT_BACKBONE, EMBED_CHUNK_ROWS

    p.add_argument("data", help=DATA_HELP + ", or a folder, file or glob of unlabelled images")
    p.add_argument(
        "--model",
        default=DEFAULT_BACKBONE,
        help=f"a run directory (its trained backbone) or a backbone name (default: {DEFAULT_BACKBONE})",
    )
    p.add_argument("-o", "--output", required=True, help="the .parquet or .npy file to write")
    p.add_argument(
        "--output-format",
        choices=("auto", "parquet", "npy"),
        default="auto",
        help="parquet, or npy for numpy users (default: from the output's suffix; --format names "
        "how to read DATA)",
    )
    p.add_argument("--weights", metavar="FILE", help="with a backbone name: a local state dict for it")
    p.add_argument("--input-size", type=positive_int, help="with a backbone name: input size in pixels")
    add_source_options(p, from_config=False)
    add_forward_batch_option(p)
    p.add_argument("--workers", type=int, help="image-decoding processes (default: automatic)")
    p.add_argument(
        "--cache-dir", help="feature cache location (default: $IMGCLS_CACHE_DIR or ~/.cache/imgcls)"
    )
    p.add_argument("--no-cache", dest="use_cache", action="store_false", help="do not use the feature cache")
    p.add_argument(
        "--chunk-rows",
        type=positive_int,
        default=EMBED_CHUNK_ROWS,
        help="images per part file while embedding: an interrupted run resumes at the first "
        f"missing part (default: {EMBED_CHUNK_ROWS})",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    add_device_option(p, "the network")
    add_engine_options(p, "the embedding")


def run_embed(args: argparse.Namespace) -> int:
    from imgcls.workflows.embed import embed

    done = embed(
        args.data,
        args.output,
        model=args.model,
        weights=args.weights,
        input_size=args.input_size,
        output_format=args.output_format,
        **source_keywords(args),
        batch_size=args.batch_size,
        workers=args.workers,
        cache_dir=args.cache_dir,
        use_cache=args.use_cache,
        overwrite=args.overwrite,
        chunk_rows=args.chunk_rows,
        engine=args.engine,
        ray_address=args.ray_address,
        ray_actors=args.ray_actors,
        device=args.device,
    )
    summary = {
        "output": str(done.output),
        "rows": len(done.table),
        "dim": int(done.vectors.shape[1]),
        "computed": done.computed,
        "resumed": done.resumed,
        "forwarded": done.forwarded,
        "unreadable": done.unreadable,
    }
    if args.json:
        print_json(summary)
        return 0
    resumed = f", {done.resumed} resumed from an interrupted run" if done.resumed else ""
    print(f"wrote {summary['rows']} embeddings of {summary['dim']} dimensions to {done.output}{resumed}")
    for row_id, reason in done.unreadable.items():
        print(f"  skipped {row_id}: {reason}")
    return 0


def add_similar(p: argparse.ArgumentParser) -> None:
    from imgcls.config import NEIGHBOURS, SEARCH_ENGINES

    p.add_argument("embeddings", help="an embedding file written by imgcls embed (.parquet or .npy)")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="record ids of the file, or image files")
    p.add_argument(
        "-k", type=positive_int, default=NEIGHBOURS, help=f"neighbours per query (default: {NEIGHBOURS})"
    )
    p.add_argument(
        "--engine",
        choices=SEARCH_ENGINES,
        default="auto",
        help="exact search with numpy, or with faiss (auto: faiss for large files when installed)",
    )
    p.add_argument("--html", metavar="FILE", help="write a page with thumbnails of each query's neighbours")
    p.add_argument("--json", action="store_true", help="print the neighbours as JSON")


def run_similar(args: argparse.Namespace) -> int:
    from imgcls.workflows.similar import similar

    results = similar(args.embeddings, args.queries, k=args.k, engine=args.engine, html=args.html)
    if args.json:
        print_json([r.to_dict() for r in results])
        return 0
    for result in results:
        print(f"{result.query}:")
        for rank, n in enumerate(result.neighbours, start=1):
            print(f"  {rank:>3}  {n.similarity:.4f}  {n.id}  {n.label or ''}".rstrip())
    if args.html:
        print(f"page: {args.html}")
    return 0
