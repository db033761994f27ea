"""The esci part on tiny synthetic ESCI pairs files (no shared data, no model loaded)."""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import numpy as np

from training.report.markdown_real import real_esci_section
from training.report.real_esci import (
    NEURAL_STACK,
    REFERENCE,
    TEACHER,
    auc_difference,
    fuller_text,
    measure_teachers,
    read_split,
    verdict,
)

COLUMNS = (
    "query",
    "esci_label",
    "product_title",
    "product_brand",
    "product_color",
    "product_description",
    "product_bullet_point",
)
WORDS = ["oak", "rug", "lamp", "sofa", "desk", "vase", "frame", "chair", "mug", "shelf"]


def _write(path: Path, rng: np.random.Generator, n: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        for i in range(n):
            query = " ".join(rng.choice(WORDS, 2, replace=False))
            label = "ESIC"[i % 4] if i < 8 else str(rng.choice(list("EEESI")))
            # An Exact product shares the query's words; the others share one at most.
            title = query if label == "E" else f"{query.split()[0]} {rng.choice(WORDS)}"
            w.writerow(
                {
                    "query": query,
                    "esci_label": label,
                    "product_title": f"{title} deluxe",
                    "product_brand": "Acme",
                    "product_color": "Blue",
                    "product_description": "<p>long text</p>",
                    "product_bullet_point": "<b>Solid</b> wood\nEasy to clean",
                }
            )


class HashEncoder:
    """Bag of words hashed into 32 dimensions, L2-normalised."""

    def encode(self, texts: list[str], batch_size: int = 0, desc: str = "") -> np.ndarray:
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for i, t in enumerate(texts):
            for word in t.lower().split():
                out[i, zlib.crc32(word.encode()) % 32] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def overlap_cross_encoder(queries: list[str], titles: list[str]) -> np.ndarray:
    """Grade probabilities that favour Exact as the title covers more of the query."""
    share = np.array(
        [len(set(q.split()) & set(t.split())) / len(q.split()) for q, t in zip(queries, titles, strict=True)]
    )
    logits = np.stack([1 - share, 0 * share, 0.5 * share, 2 * share], 1)
    e = np.exp(logits)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def test_fuller_text_drops_html_and_description() -> None:
    row = {
        "product_title": "Oak desk",
        "product_brand": "Acme",
        "product_color": "",
        "product_description": "<p>never read</p>",
        "product_bullet_point": "<b>Solid</b> wood\nEasy &amp; quick",
    }
    assert fuller_text(row) == "Oak desk . Acme . Solid wood Easy & quick"


def test_verdict_and_paired_difference() -> None:
    assert verdict([0.01, 0.2]) == "beats"
    assert verdict([-0.2, 0.1]) == "within noise"
    assert verdict([-0.3, -0.01]) == "loses"
    positive = np.array([True] * 10 + [False] * 10)
    perfect, reverse = positive.astype(float), (~positive).astype(float)
    d = auc_difference(perfect, reverse, positive, seed=0)
    assert d["difference"] == 1.0 and d["difference_ci"][0] > 0


def test_measure_teachers_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, n in (("train", 24), ("dev", 20), ("test", 20)):
        _write(tmp_path / f"pairs_{name}.csv", rng, n)
    splits = {name: read_split(tmp_path / f"pairs_{name}.csv") for name in ("train", "dev", "test")}
    assert splits["dev"].labels()["complement"] == 2 and splits["dev"].fuller[0].endswith("Easy to clean")
    encoders = {"minilm": HashEncoder(), "mpnet": HashEncoder()}
    r = measure_teachers(splits, encoders, encoders, overlap_cross_encoder, seed=0)
    rows = {x["teacher"]: x for x in r["rows"]}
    assert {
        REFERENCE,
        "BM25, fuller text",
        "MiniLM cosine, titles",
        "mpnet cosine, fuller text",
        "cross-encoder, raw (its own probabilities)",
        "stacked: bi-encoders (titles), fitted on dev",
        "query words in the title",
        NEURAL_STACK,
        TEACHER,
    } <= set(rows)
    assert r["teacher"] == TEACHER and r["pairs"] == {"train": 24, "dev": 20, "test": 20}
    for name, row in rows.items():
        assert 0.0 <= row["auc"] <= 1.0 and row["auc_ci"][0] <= row["auc"] <= row["auc_ci"][1]
        if name == REFERENCE:
            assert "difference" not in row
        else:
            assert row["vs_bm25"] == verdict(row["difference_ci"])
    # The synthetic Exact titles hold the whole query: the overlap cross-encoder ranks them first.
    assert rows["cross-encoder, raw (its own probabilities)"]["auc"] > 0.9
    assert r["teacher_beats_bm25"] == (rows[TEACHER]["vs_bm25"] == "beats")

    text = "\n".join(real_esci_section({**r, "command": "sift-train report", "seconds": 1.0} | _ce(tmp_path)))
    assert "## ESCI relevance teachers trained on the real pairs (test split)" in text
    assert f"| {TEACHER} |" in text and "No student is measured here" in text
    assert "seed 1: dev 0.500, test 0.250 (0.100-0.400)" in text
    assert f"Does the teacher ({TEACHER}) beat {REFERENCE} on test? " in text


def test_measure_teachers_without_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for name in ("dev", "test"):
        _write(tmp_path / f"pairs_{name}.csv", rng, 12)
    splits = {name: read_split(tmp_path / f"pairs_{name}.csv") for name in ("dev", "test")}
    r = measure_teachers(splits, {}, {}, None, seed=0)
    assert [x["teacher"] for x in r["rows"]] == [
        REFERENCE,
        "BM25, fuller text",
        "query words in the title",
    ]
    assert r["teacher"] is None and r["teacher_beats_bm25"] is None


def _ce(folder: Path) -> dict[str, object]:
    return {
        "folder": str(folder),
        "cross_encoder": {
            "base": "fake",
            "train_top_layers": 2,
            "epochs": 4,
            "seed": 0,
            "seeds": [{"seed": 1, "dev_auc": 0.5, "auc": 0.25, "auc_ci": [0.1, 0.4]}],
        },
    }
