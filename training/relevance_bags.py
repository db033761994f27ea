"""The text relevance student served as two graphs (manifest kind text_bags): everything on the product side
is computed once, when the bundle is built.

- The title model (TITLE_MODEL) turns a title's n-gram ids into its embedding bag. It runs over the whole
  catalogue here (TITLE_BAGS, memory-mapped by the server), and online only for candidates given by title.
- The scoring graph embeds the query once per call and reads one row per candidate: the four features, the
  match block and the title's bag. The text_mlp graph embedded the same query once per candidate and looked
  up every candidate's title ids on every call.

Both compute the trained student's own numbers (training/relevance_text.py BagsRelevanceModel). Each goes
through the int8 gate, and the pair's grades are checked against the fp32 text_mlp graph on the eval pairs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from server.featurize import TEXT_QUERY_IDS, TEXT_TITLE_IDS, title_id_block
from server.manifest import ArraySpec, ModelComponent
from training.gate import PARITY
from training.onnx_teacher import quantize_with_gate
from training.relevance_text import F0, Q_IDS, Q_MATCH, Q_SLOTS, T_IDS, BagsRelevanceModel, TitleBagModel

TITLE_MODEL = "relevance_titles.onnx"
TITLE_BAGS = "relevance_title_bags.npy"
LEXICON_FILES = {k: f"products_{k}.npy" for k in ("word_indptr", "word_ids", "char_indptr", "char_ids")}


@dataclass(frozen=True)
class BagsExport:
    bag_dim: int
    title_bags: ArraySpec
    evaluation: dict[str, Any]


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def title_bags(
    title_model: Path, lexicon: dict[str, np.ndarray], num_buckets: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """float32 [len(rows), dim]: the title bags of the products at `rows` (default: all) from the lexicon's
    word and character CSR arrays, through the served title model, in chunks."""
    session = _session(title_model)
    if rows is None:
        rows = np.arange(len(lexicon["word_indptr"]) - 1)
    dim = session.get_outputs()[0].shape[1]
    out = np.empty((len(rows), dim), dtype=np.float32)
    for start in range(0, len(rows), 16384):
        part = rows[start : start + 16384]
        ids = title_id_block(lexicon, part, num_buckets)
        out[start : start + len(part)] = session.run(None, {"title_ids": ids})[0]
    return out


def write_updated_bags(
    bundle: Path,
    relevance: ModelComponent,
    out: Path,
    origin: np.ndarray,
    lexicon: dict[str, np.ndarray],
    num_buckets: int,
) -> ModelComponent:
    """A changed catalogue's title bags in `out`: row i keeps the old bundle's row origin[i] when it is not
    negative (the product and its title unchanged), else is embedded by the bundle's title model from the
    new `lexicon`. Returns the relevance component listing them."""
    assert relevance.title_model is not None and relevance.title_bags is not None
    old = np.load(bundle / relevance.title_bags.file, mmap_mode="r", allow_pickle=False)
    bags = np.empty((len(origin), old.shape[1]), dtype=np.float32)
    kept = np.flatnonzero(origin >= 0)
    bags[kept] = old[origin[kept]]
    fresh = np.flatnonzero(origin < 0)
    bags[fresh] = title_bags(bundle / relevance.title_model, lexicon, num_buckets, fresh)
    np.save(out / relevance.title_bags.file, bags, allow_pickle=False)
    return replace(relevance, title_bags=ArraySpec(relevance.title_bags.file, bags.dtype.str, bags.shape))


def run_text_bags(title_model: Path, scorer: Path, x: np.ndarray) -> np.ndarray:
    """The two graphs' probabilities for text_mlp rows `x` (server/featurize.py text_relevance_input), as
    the server computes them: the rows' title bags, then one scoring run per distinct query."""
    bags = _session(title_model).run(None, {"title_ids": x[:, T_IDS]})[0]
    scoring = _session(scorer)
    rows = np.concatenate([x[:, :F0], x[:, Q_MATCH], bags], axis=1)
    query_rows = np.concatenate([x[:, Q_IDS], x[:, Q_SLOTS]], axis=1)
    queries, group = np.unique(query_rows, axis=0, return_inverse=True)
    group = group.reshape(-1)
    out: np.ndarray | None = None
    for g in range(len(queries)):
        at = np.flatnonzero(group == g)
        probs = scoring.run(None, {"query": queries[g : g + 1], "features": rows[at]})[0]
        if out is None:
            out = np.empty((len(x), probs.shape[1]), dtype=np.float32)
        out[at] = probs
    assert out is not None
    return out


def export_text_bags(
    head: torch.nn.Module, x_eval: np.ndarray, out: Path, tmp: Path, num_buckets: int
) -> BagsExport:
    """Writes the scoring graph over `out`/relevance.onnx, `out`/TITLE_MODEL and `out`/TITLE_BAGS (from the
    product lexicon arrays already in `out`); fp32 exports stay in `tmp`. The title model is gated on the
    cosine of its bags to fp32, the scoring graph on grade agreement with the fp32 text_mlp graph (which
    `tmp`/relevance.onnx holds: training/relevance.py export_relevance) when fed the int8 title bags."""
    head.eval()
    dim = head.embedding.weight.shape[1]
    titles_fp32, scorer_fp32 = tmp / TITLE_MODEL, tmp / "relevance_bags.onnx"
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        example = torch.from_numpy(x_eval[:2])
        torch.onnx.export(
            TitleBagModel(head),
            (example[:, T_IDS],),
            str(titles_fp32),
            input_names=["title_ids"],
            output_names=["title_bags"],
            dynamic_axes={"title_ids": {0: "batch"}, "title_bags": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        query = torch.cat([example[:1, Q_IDS], example[:1, Q_SLOTS]], dim=1)
        features = torch.cat(
            [example[:, :F0], example[:, Q_MATCH], TitleBagModel(head)(example[:, T_IDS])], dim=1
        )
        torch.onnx.export(
            BagsRelevanceModel(head),
            (query, features),
            str(scorer_fp32),
            input_names=["query", "features"],
            output_names=["probabilities"],
            dynamic_axes={"features": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    reference_bags = _session(titles_fp32).run(None, {"title_ids": x_eval[:, T_IDS]})[0]

    def bag_cosine(candidate: Path) -> float:
        bags = _session(candidate).run(None, {"title_ids": x_eval[:, T_IDS]})[0]
        norms = np.linalg.norm(bags, axis=1) * np.linalg.norm(reference_bags, axis=1)
        return float(np.mean((bags * reference_bags).sum(1) / np.maximum(norms, 1e-12)))

    titles_gate = quantize_with_gate(titles_fp32, out / TITLE_MODEL, bag_cosine, PARITY["query_encoder"])
    reference = _session(tmp / "relevance.onnx").run(None, {"features": x_eval})[0].argmax(1)

    def agreement(candidate: Path) -> float:
        return float(np.mean(run_text_bags(out / TITLE_MODEL, candidate, x_eval).argmax(1) == reference))

    scorer_gate = quantize_with_gate(scorer_fp32, out / "relevance.onnx", agreement, PARITY["relevance"])
    # The fp32 sibling keeps what the bundle serves (sift-bench models compares the two); the text_mlp
    # graph stays beside it under its own name.
    (tmp / "relevance.onnx").rename(tmp / "relevance_text_mlp.onnx")
    scorer_fp32.rename(tmp / "relevance.onnx")
    lexicon = {k: np.load(out / f, allow_pickle=False) for k, f in LEXICON_FILES.items()}
    bags = title_bags(out / TITLE_MODEL, lexicon, num_buckets)
    np.save(out / TITLE_BAGS, bags, allow_pickle=False)
    return BagsExport(
        dim,
        ArraySpec(TITLE_BAGS, bags.dtype.str, tuple(int(s) for s in bags.shape)),
        {
            "title_model_quantization": titles_gate,
            "quantization": scorer_gate,
            "widths": {"query": 2 * TEXT_QUERY_IDS, "title_ids": TEXT_TITLE_IDS, "bag": dim},
        },
    )
