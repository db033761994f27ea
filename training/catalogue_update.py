"""The catalogue side of a bundle, written at training and changed without retraining.

`update_bundle` is `sift-train update`: products of a catalogue file
replace the bundle's products of the same id or are added, `--remove` drops ids, and only the new and
changed products are embedded, by the bundle's own product teacher. The students, rules and evaluation are
kept as they are; the index is updated in place (removed keys dropped, the last rows renamed into their
places, new vectors added), the BM25 index and product arrays rebuilt, and the result is a new bundle
version, written beside the output and renamed into place, that a running server's reload picks up.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime  # noqa: F401 - must load before usearch
from usearch.index import Index

from server.bundle import load_bundle
from server.catalogue import ProductTable, from_products_json, product_arrays, save_product_arrays
from server.featurize import Featurizer, FeaturizerConfig, title_lexicon_arrays
from server.manifest import Label, Manifest, files_of
from server.runtime.index import ProductIndex, slot_map
from server.runtime.lexical import build_lexical_index, save
from training.bundle_writer import code_version
from training.data.catalogue import Catalogue, Product
from training.data.columns import GUESS, Columns
from training.data.loaders import ID_KEYS, load_catalogue, read_header
from training.relevance_bags import write_updated_bags
from training.retrieval import embed_products
from training.update_teacher import CACHE_ENV, PROBES, cached_teacher, parity

log = logging.getLogger("sift.update")


@dataclass(frozen=True)
class CatalogueSide:
    ids: list[str]
    titles: list[str]
    categories: np.ndarray
    lexicon: dict[str, np.ndarray]


def load_catalogue_side(directory: Path, manifest: Manifest) -> CatalogueSide:
    """A bundle's products (ids, titles, categories, lexicon arrays) from its arrays or products.json."""
    spec = manifest.components.index
    if spec is None:
        raise ValueError(f"{directory}: the bundle has no product index (trained without a catalogue)")
    featurizer = Featurizer(
        directory / manifest.featurizer.tokenizer, FeaturizerConfig.from_json(manifest.featurizer.config)
    )
    if spec.arrays is not None:
        table = ProductTable.open(directory, spec.arrays, len(manifest.labels), spec.views)
    else:
        assert spec.products is not None
        index = ProductIndex(directory / spec.file, spec.views)
        table = from_products_json(
            directory / spec.products, len(manifest.labels), featurizer, index.all_views
        )
    lexicon = {k: np.asarray(table.arrays[k]) for k in ("word_indptr", "word_ids", "char_indptr", "char_ids")}
    lexicon["text_hash"] = np.asarray(table.arrays["text_hash"])
    return CatalogueSide(table.ids.tolist(), table.titles.tolist(), np.asarray(table.categories), lexicon)


def label_index(labels: Sequence[Label], path: str) -> int | None:
    """The label of a category path: the label with that path, else the deepest label above it (a bundle
    trained at a label level); None when the intent model knows no such category."""
    best, depth = None, -1
    for i, label in enumerate(labels):
        if (path == label.path or path.startswith(label.path + " > ")) and len(label.path) > depth:
            best, depth = i, len(label.path)
    return best


def _csr_take(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows `rows` of (indptr, values), as a new CSR, without a Python loop over rows."""
    lengths = indptr[rows + 1] - indptr[rows]
    out_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_ptr[1:])
    offsets = np.repeat(indptr[rows] - out_ptr[:-1], lengths)
    return out_ptr, values[np.arange(out_ptr[-1]) + offsets]


def _splice_lexicon(
    old: dict[str, np.ndarray], new: dict[str, np.ndarray], source: np.ndarray
) -> dict[str, np.ndarray]:
    """Lexicon rows in the final order: row i is old row source[i] when >= 0, else new row -source[i] - 1."""
    n_old = len(old["text_hash"])
    rows = np.where(source >= 0, source, n_old - source - 1)
    out = {}
    for ptr, vals in (("word_indptr", "word_ids"), ("char_indptr", "char_ids")):
        both_ptr = np.concatenate([old[ptr][:-1], old[ptr][-1] + new[ptr]])
        both_vals = np.concatenate([old[vals], new[vals]])
        out[ptr], out[vals] = _csr_take(both_ptr, both_vals, rows)
    out["text_hash"] = np.concatenate([old["text_hash"], new["text_hash"]])[rows]
    return out


@dataclass(frozen=True)
class UpdateReport:
    version: str
    products: int
    added: int
    replaced: int
    removed: int
    embedded_texts: int
    seconds: dict[str, float]
    teacher_gate: dict[str, Any]


def read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"--remove {path}: no such file")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def update_bundle(
    bundle: Path,
    output: Path,
    data: Path | None = None,
    remove: Path | None = None,
    columns: Columns = GUESS,
    encode: Callable[[list[str]], np.ndarray] | None = None,
    teacher_cache: Path | None = None,
) -> UpdateReport:
    """`sift-train update`. `encode` embeds texts as the bundle's product teacher does (default: that
    teacher's int8 ONNX export, from `teacher_cache` or built there). Raises ValueError saying what cannot
    be done."""
    timings: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    if data is None and remove is None:
        raise ValueError("update: give --data (products to add or replace), --remove (ids to drop), or both")
    old = Manifest.read(bundle)
    old.verify_files(bundle)
    spec = old.components.index
    if spec is None or "retrieval" not in old.components.capabilities():
        raise ValueError(f"--bundle {bundle}: has no product index to update (trained without a catalogue)")
    side = load_catalogue_side(bundle, old)
    row_of = {pid: i for i, pid in enumerate(side.ids)}
    incoming: list[Product] = []
    if data is not None:
        if not any(k in read_header(data) for k in ((columns.id,) if columns.id else ID_KEYS)):
            raise ValueError(
                f"--data {data}: needs a product id column ({columns.id or ', '.join(ID_KEYS)}): "
                "an update replaces products by id"
            )
        incoming = list(load_catalogue(data, 0, 0, columns).products)
    dropped = read_ids(remove) if remove is not None else []
    label_of: list[int] = []
    for n, p in enumerate(incoming):
        label = label_index(old.labels, p.category)
        if label is None:
            raise ValueError(
                f"--data {data}: row {n + 1} ({p.id}) has category {p.category!r}, which the intent model "
                f"does not know (it has {len(old.labels)} labels); a new category needs a retrained bundle"
            )
        label_of.append(label)
    if len({p.id for p in incoming}) != len(incoming):
        raise ValueError(f"--data {data}: product ids repeat")
    unknown = [pid for pid in dropped if pid not in row_of]
    if unknown:
        raise ValueError(f"--remove {remove}: {len(unknown)} ids are not in the bundle, e.g. {unknown[:3]}")
    both = {p.id for p in incoming} & set(dropped)
    if both:
        raise ValueError(f"--data and --remove both name {len(both)} ids, e.g. {sorted(both)[:3]}")
    lap("read")

    # Embed the new and changed products with the product teacher (its cached int8 ONNX export), first
    # checked against the index's own vectors of the bundle's first products' titles.
    teacher = old.training.get("preset", {}).get("methods", {}).get("product_teacher")
    index = Index.restore(str(bundle / spec.file))
    if index is None:
        raise ValueError(f"{spec.file}: not a usearch index")
    views, dim = spec.views, index.ndim
    probes = np.arange(min(PROBES, len(side.ids)), dtype=np.int64)
    stored = (
        np.stack(index.get((probes * views).astype(np.uint64))).astype(np.float32).reshape(len(probes), -1)
    )
    titles = [side.titles[r] for r in probes.tolist()]
    gate: dict[str, Any] = {"teacher": teacher or "(given)"}
    if encode is None:
        if not teacher:
            raise ValueError(f"--bundle {bundle}: its manifest does not name the product teacher")
        model, built = cached_teacher(teacher, titles, teacher_cache)
        encode = model.encode
        gate |= {"runtime": f"onnxruntime {built['method']}", "export": str(model.path), "built": built}
    gate |= parity(encode, titles, stored)
    lap("teacher")
    new_vecs = (
        embed_products(encode, Catalogue(tuple(incoming), ()), views)
        if incoming
        else np.zeros((0, views, dim), dtype=np.float32)
    )
    lap("embed")

    # The final rows: survivors keep their row, except the last ones, which move into removed rows'
    # places (their keys renamed), then added products at the end. A replaced product keeps its row.
    n_old = len(side.ids)
    gone = np.array(sorted(row_of[pid] for pid in dropped), dtype=np.int64)
    n_kept = n_old - len(gone)
    holes = gone[gone < n_kept]
    movers = np.setdiff1d(np.arange(n_kept, n_old), gone)
    source = np.arange(n_kept, dtype=np.int64)
    source[holes] = movers
    replaced = [(row_of[p.id], j) for j, p in enumerate(incoming) if p.id in row_of]
    added = [j for j, p in enumerate(incoming) if p.id not in row_of]
    final_of_old = np.full(n_old, -1, dtype=np.int64)
    final_of_old[source] = np.arange(n_kept)

    def keys(rows: np.ndarray) -> np.ndarray:
        return (rows[:, None] * views + np.arange(views)).reshape(-1).astype(np.uint64)

    if len(gone):
        index.remove(keys(gone))
    if len(movers):
        index.rename(keys(movers), keys(holes))
    if replaced:
        at = final_of_old[np.array([r for r, _ in replaced], dtype=np.int64)]
        index.remove(keys(at))
        index.add(keys(at), new_vecs[[j for _, j in replaced]].reshape(-1, dim))
    if added:
        index.add(keys(np.arange(n_kept, n_kept + len(added))), new_vecs[added].reshape(-1, dim))
    lap("index")

    # The product side in the final order; lexicon rows of unchanged products are reused.
    ids = [side.ids[r] for r in source.tolist()] + [incoming[j].id for j in added]
    titles = [side.titles[r] for r in source.tolist()] + [incoming[j].title for j in added]
    categories = np.concatenate(
        [side.categories[source], np.array([label_of[j] for j in added], dtype=np.int64)]
    ).astype(np.int64)
    origin = np.concatenate([source, -1 - np.arange(len(added))]).astype(np.int64)
    fresh = [incoming[j] for j in added]
    for r, j in replaced:
        row = int(final_of_old[r])
        titles[row], categories[row] = incoming[j].title, label_of[j]
        origin[row] = -1 - len(fresh)
        fresh.append(incoming[j])
    featurizer = Featurizer(
        bundle / old.featurizer.tokenizer, FeaturizerConfig.from_json(old.featurizer.config)
    )
    lexicon = _splice_lexicon(
        side.lexicon, title_lexicon_arrays([p.title for p in fresh], featurizer), origin
    )
    lap("lexicon")

    work = Path(
        tempfile.mkdtemp(prefix=".sift-update-", dir=output.parent if output.parent.exists() else None)
    )
    try:
        index.save(str(work / spec.file))
        del index
        # The slot map first: the product arrays then read the vectors from the file's block by slot, where
        # opening the index with usearch's key lookups built its key table and read every vector a second
        # time. (Measured at 1M products, the write step took as long either way: the time is elsewhere.)
        slots = slot_map(work / spec.file)
        served = ProductIndex(work / spec.file, views, slots)
        arrays = save_product_arrays(
            work,
            product_arrays(ids, titles, categories, len(old.labels), featurizer, served.all_views, lexicon),
            work / spec.file,
            slots,
        )
        lexical = old.components.lexical
        kept = {spec.file} | {a.file for a in (spec.arrays or {}).values()}
        relevance = old.components.relevance
        if relevance is not None and relevance.title_bags is not None:  # text_bags: the products' bags
            relevance = write_updated_bags(
                bundle, relevance, work, origin, lexicon, featurizer.config.num_buckets
            )
            kept.add(relevance.title_bags.file)
        if lexical is not None:
            built = build_lexical_index(titles, lexical.k1, lexical.b)
            # Every file the new BM25 index wrote (its impact order too), so none is copied from the old.
            kept |= set(save(work, built, lexical.vocabulary.removesuffix("_vocab.json")))
        for name in old.files:
            if name not in kept and name != spec.products:
                shutil.copy2(bundle / name, work / name)
        lap("write")
        now = datetime.now(UTC)
        name = old.training.get("preset", {}).get("name") or old.bundle_version.rsplit("-", 1)[0]
        version = f"{name}-{now:%Y%m%dT%H%M%SZ}"
        update = {
            "from": old.bundle_version,
            "data": str(data) if data else None,
            "removed_from": str(remove) if remove else None,
            "added": len(added),
            "replaced": len(replaced),
            "removed": len(gone),
            "products": len(ids),
            "teacher_gate": gate,
            "note": "students, rules and evaluation are the base bundle's; only the catalogue changed",
        }
        training: dict[str, Any] = {**old.training, "updates": [*old.training.get("updates", []), update]}
        manifest = replace(
            old,
            bundle_version=version,
            created_at=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            code_version=code_version(),
            files=files_of(work),
            components=replace(
                old.components,
                index=replace(spec, products=None, arrays=arrays, count=len(ids)),
                relevance=relevance,
            ),
            training=training,
            schema_version=3,
        )
        manifest.write(work)
        load_bundle(work).warm_up()  # the server's own validation
        lap("verify")
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.exists():
            shutil.rmtree(output)
        work.rename(output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    timings["total"] = round(time.perf_counter() - started, 2)
    return UpdateReport(
        version, len(ids), len(added), len(replaced), len(gone), len(incoming) * views, timings, gate
    )


def update_main(args: list[str]) -> None:
    """`sift-train update --bundle OLD --data FILE --output NEW [--remove IDS_FILE]`."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="sift-train update",
        description="Add, replace and remove products of a bundle without retraining: new and changed "
        "products are embedded by the bundle's product teacher; the students are untouched.",
    )
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle to update")
    parser.add_argument("--data", type=Path, help="catalogue file (.csv/.tsv/.jsonl) with an id column")
    parser.add_argument("--output", type=Path, required=True, help="where the new bundle is written")
    parser.add_argument("--remove", type=Path, help="file of product ids to drop, one a line")
    parser.add_argument("--title-column")
    parser.add_argument("--category-column")
    parser.add_argument("--id-column")
    parser.add_argument(
        "--teacher-cache",
        type=Path,
        help=f"where the product teacher's ONNX export is built on first use and kept (${CACHE_ENV}, "
        "else ~/.cache/sift/teachers)",
    )
    ns = parser.parse_args(args)
    columns = Columns(title=ns.title_column, category=ns.category_column, id=ns.id_column)
    try:
        report = update_bundle(
            ns.bundle, ns.output, ns.data, ns.remove, columns, teacher_cache=ns.teacher_cache
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"sift-train update: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    print(json.dumps({"bundle": str(ns.output), **report.__dict__}, indent=1))
