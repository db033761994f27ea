"""ScoreRelevance with either kind of relevance student: the text student (what training ships now) and
the MLP over four features (what older bundles hold, which keep loading and serving); and with either grade
set: the three grades, or ESCI's four."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from server.bundle import MANIFEST, BundleError, load_bundle
from server.featurize import RELEVANCE_FEATURES, TEXT_RELEVANCE_FEATURES, TEXT_RELEVANCE_WIDTH
from server.manifest import FileEntry
from server.rules import ESCI_GRADES, GRADES
from server.service.relevance import CandidateInput, RelevanceService
from server.service.store import BundleStore
from server.service.validation import Limits
from training.export import export_onnx
from training.relevance import TieredRelevanceHead
from training.relevance_bags import LEXICON_FILES, TITLE_BAGS, TITLE_MODEL, title_bags


def _edit(bundle: Path, change) -> None:
    path = bundle / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _score(bundle: Path, query: str, candidates: list[CandidateInput]):
    service = RelevanceService(BundleStore(load_bundle(bundle)), Limits())
    return asyncio.run(service.score(query, candidates)).scores


def as_feature_bundle(bundle: Path) -> None:
    """Rewrites a bundle's relevance model as bundles before the text student held it: an MLP over the four
    features, its manifest entry without a kind."""
    torch.manual_seed(0)
    export_onnx(
        TieredRelevanceHead(len(RELEVANCE_FEATURES)),
        torch.zeros(2, len(RELEVANCE_FEATURES)),
        "features",
        "probabilities",
        bundle / "relevance.onnx",
    )

    def older(m: dict) -> None:
        rel = m["components"]["relevance"]
        rel.pop("kind", None)
        rel["inputs"] = [
            {"name": "features", "dtype": "float32", "shape": ["batch", len(RELEVANCE_FEATURES)]}
        ]
        rel["feature_names"] = list(RELEVANCE_FEATURES)
        m["files"]["relevance.onnx"] = FileEntry.of(bundle / "relevance.onnx").to_json()

    _edit(bundle, older)


def as_saturated_bundle(bundle: Path, grades: tuple[str, ...], answer: str) -> None:
    """Rewrites a bundle's relevance model as a four-feature MLP over `grades` whose every answer is
    `answer` (its tiered gates saturated), the manifest listing those grades."""
    k = grades.index(answer)
    head = TieredRelevanceHead(len(RELEVANCE_FEATURES), num_grades=len(grades))
    with torch.no_grad():  # gate g: P(above grade g | at least g); open below `answer`, shut at it
        head.heads.weight.zero_()
        head.heads.bias.copy_(torch.tensor([10.0 if g < k else -10.0 for g in range(len(grades) - 1)]))
    export_onnx(
        head, torch.zeros(2, len(RELEVANCE_FEATURES)), "features", "probabilities", bundle / "relevance.onnx"
    )

    def saturated(m: dict) -> None:
        rel = m["components"]["relevance"]
        rel.pop("kind", None)
        rel["inputs"] = [
            {"name": "features", "dtype": "float32", "shape": ["batch", len(RELEVANCE_FEATURES)]}
        ]
        rel["outputs"][0]["shape"] = ["batch", len(grades)]
        rel["feature_names"] = list(RELEVANCE_FEATURES)
        rel["grades"] = list(grades)
        m["files"]["relevance.onnx"] = FileEntry.of(bundle / "relevance.onnx").to_json()

    _edit(bundle, saturated)


def write_rules(bundle: Path, change) -> None:
    """Changes a bundle's rules.json (and its manifest entry)."""
    rules = json.loads((bundle / "rules.json").read_text())
    change(rules)
    (bundle / "rules.json").write_text(json.dumps(rules))
    _edit(bundle, lambda m: m["files"].update({"rules.json": FileEntry.of(bundle / "rules.json").to_json()}))


def as_esci_bundle(bundle: Path, answer: str) -> None:
    """A bundle as if trained on ESCI-style data: ESCI's four grades, a model that always answers `answer`,
    and rules.json's "partial" renamed "substitute" (its post-rules, mined on the old model's grades,
    dropped)."""
    as_saturated_bundle(bundle, ESCI_GRADES, answer)

    def esci(rules: dict) -> None:
        for rule in rules["relevance"]["pre"]:
            rule["grade"] = {"partial": "substitute"}.get(rule["grade"], rule["grade"])
            rule["name"] = rule["name"].replace("-> partial", "-> substitute")
        rules["relevance"]["post"] = []

    write_rules(bundle, esci)


def _candidates(bundle: Path, n: int) -> tuple[list[CandidateInput], str]:
    products = load_bundle(bundle).products
    rows = random.Random(0).sample(range(len(products.ids)), n)
    cands = [CandidateInput(product_id=products.ids[r]) for r in rows[: n // 2]]
    cands += [CandidateInput(title=products.titles[r]) for r in rows[n // 2 :]]
    return cands, " ".join(products.titles[rows[0]].split()[:2])


def test_tiny_bundle_ships_the_text_student(tiny_bundle: Path) -> None:
    """Served as two graphs: every product's title bag computed when the bundle was built."""
    bundle = load_bundle(tiny_bundle)
    assert bundle.relevance_kind == "text_bags"
    manifest = json.loads((tiny_bundle / MANIFEST).read_text())
    rel = manifest["components"]["relevance"]
    assert rel["kind"] == "text_bags"
    assert [i["name"] for i in rel["inputs"]] == ["query", "features"]
    assert bundle.title_bags is not None and bundle.title_bags.shape[0] == len(bundle.products)
    ev = manifest["evaluation"]["relevance"]
    assert ev["student_kind"] == "text_mlp"
    assert ev["served_as_bags"]["quantization"]["score"] >= 0.99
    assert ev["distillation"]["unlabelled_pairs"] >= ev["distillation"]["labelled_pairs"]


def as_fp32_bundle(bundle: Path, fp32: Path, kind: str) -> None:
    """Rewrites a text_bags bundle's relevance model with training's fp32 exports (tiny.fp32 beside the
    bundle): as the same two fp32 graphs (its title bags recomputed by the fp32 title model), or as the one
    fp32 text_mlp graph they were split from."""
    rel_file = bundle / "relevance.onnx"
    if kind == "text_bags":
        shutil.copyfile(fp32 / "relevance.onnx", rel_file)
        shutil.copyfile(fp32 / TITLE_MODEL, bundle / TITLE_MODEL)
        lexicon = {k: np.load(bundle / f) for k, f in LEXICON_FILES.items()}
        buckets = load_bundle(bundle, verify=False).featurizer.config.num_buckets
        np.save(bundle / TITLE_BAGS, title_bags(bundle / TITLE_MODEL, lexicon, buckets))
    else:
        shutil.copyfile(fp32 / "relevance_text_mlp.onnx", rel_file)

    def change(m: dict) -> None:
        rel = m["components"]["relevance"]
        if kind == "text_mlp":
            rel.update(kind="text_mlp", feature_names=list(TEXT_RELEVANCE_FEATURES))
            rel["inputs"] = [
                {"name": "features", "dtype": "float32", "shape": ["batch", TEXT_RELEVANCE_WIDTH]}
            ]
            del rel["title_model"], rel["title_bags"]
        for name in ("relevance.onnx", TITLE_MODEL, TITLE_BAGS):
            m["files"][name] = FileEntry.of(bundle / name).to_json()

    _edit(bundle, change)


def test_text_bags_serve_the_text_students_own_numbers(tiny_bundle: Path, tmp_path: Path) -> None:
    """The two graphs and the one they were split from, both fp32, give the same scores and grades for
    candidates by id (precomputed bags) and by title (embedded online)."""
    fp32 = Path(f"{tiny_bundle}.fp32")
    scores = {}
    for kind in ("text_bags", "text_mlp"):
        copy = Path(shutil.copytree(tiny_bundle, tmp_path / kind))
        as_fp32_bundle(copy, fp32, kind)
        assert load_bundle(copy).relevance_kind == kind
        cands, query = _candidates(copy, 40)
        scores[kind] = _score(copy, query, cands)
    bags, mlp = scores["text_bags"], scores["text_mlp"]
    assert sum(s.source == "model" for s in bags) >= 10
    assert [s.grade for s in bags] == [s.grade for s in mlp]
    assert [s.score for s in bags] == pytest.approx([s.score for s in mlp], abs=1e-4)


def test_both_kinds_serve(bundle_copy: Path, tmp_path: Path) -> None:
    cands, query = _candidates(bundle_copy, 40)
    text = _score(bundle_copy, query, cands)
    as_feature_bundle(bundle_copy)
    assert load_bundle(bundle_copy).relevance_kind == "feature_mlp"
    features = _score(bundle_copy, query, cands)
    for scores in (text, features):
        assert len(scores) == len(cands)
        assert all(0.0 <= s.score <= 1.0 and s.grade in GRADES for s in scores)
    # Same rules, different models: the model-scored candidates differ.
    assert [s.score for s in text] != [s.score for s in features]


def test_text_student_ranks_the_named_product_first(tiny_bundle: Path) -> None:
    """A query made of a product's title words, against that product and 19 others: the product ranks in
    the top 3 for most queries (scored by id, so by the text student or a golden rule)."""
    products = load_bundle(tiny_bundle).products
    rng = random.Random(1)
    found = 0
    trials = 30
    for _ in range(trials):
        rows = rng.sample(range(len(products.ids)), 20)
        words = products.titles[rows[0]].split()
        start = rng.randrange(max(1, len(words) - 2))
        query = " ".join(words[start : start + 3])
        scores = _score(tiny_bundle, query, [CandidateInput(product_id=products.ids[r]) for r in rows])
        values = np.array([s.score for s in scores])
        found += values[0] >= np.sort(values)[-3]
    assert found / trials >= 0.7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda rel: rel.update(kind="cross_encoder"),
            "components.relevance.kind: 'cross_encoder' is not one this server serves",
        ),
        (
            lambda rel: rel.update(kind="feature_mlp"),
            r"components.relevance.inputs: manifest \['query', 'features'\], model \['query', 'features'\], "
            r"server feeds \['features'\]",
        ),
        (
            lambda rel: rel.update(feature_names=list(RELEVANCE_FEATURES)),
            "components.relevance.feature_names: a text_bags relevance model reads",
        ),
        (
            lambda rel: rel.pop("title_bags"),
            "components.relevance.title_bags: a text_bags model needs its products' title bags",
        ),
        (
            lambda rel: rel["title_bags"].update(shape=[3, 32]),
            r"components.relevance.title_bags: relevance_title_bags.npy is declared <f4\[3, 32\], expected",
        ),
        (
            lambda rel: rel.update(title_model="intent.onnx"),
            r"components.relevance.title_model: intent.onnx must read title_ids float32\[batch, 80\]",
        ),
        (
            lambda rel: rel.update(query_vector="teacher"),
            r"components.relevance.query_vector: 'teacher' is not one of \('query_encoder', ",
        ),
    ],
)
def test_bad_relevance_kind_refused(bundle_copy: Path, change, message: str) -> None:
    _edit(bundle_copy, lambda m: change(m["components"]["relevance"]))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("answer", ESCI_GRADES)
def test_four_grade_bundle_answers_with_its_grades(bundle_copy: Path, answer: str) -> None:
    """The model's grade comes back by its ESCI name, its score the grade's evenly spaced gain (k / 3); the
    golden rules answer with the grades they name."""
    cands, query = _candidates(bundle_copy, 40)
    as_esci_bundle(bundle_copy, answer)
    assert load_bundle(bundle_copy).grades == ESCI_GRADES
    scores = _score(bundle_copy, query, cands)
    by_model = [s for s in scores if s.source == "model"]
    assert by_model and all(s.grade == answer for s in by_model)
    assert [s.score for s in by_model] == pytest.approx(
        [ESCI_GRADES.index(answer) / 3] * len(by_model), abs=1e-3
    )
    for s in scores:
        assert s.grade in ESCI_GRADES and 0.0 <= s.score <= 1.0
        if s.source == "rule":
            assert s.rule.endswith(f"-> {s.grade}")


def test_three_grade_answers_keep_their_scores(bundle_copy: Path) -> None:
    """The same saturated model in a three-grade bundle scores as three grades always did: partial is 0.5."""
    cands, query = _candidates(bundle_copy, 40)
    as_saturated_bundle(bundle_copy, GRADES, "partial")
    assert load_bundle(bundle_copy).grades == GRADES
    scores = _score(bundle_copy, query, cands)
    by_model = [s for s in scores if s.source == "model"]
    assert by_model and all(s.grade == "partial" for s in by_model)
    assert [s.score for s in by_model] == pytest.approx([0.5] * len(by_model), abs=1e-3)
    assert all(s.grade in GRADES for s in scores)


def test_rules_naming_a_grade_outside_the_bundles_set_refused(bundle_copy: Path) -> None:
    as_esci_bundle(bundle_copy, "exact")
    post = [{"when": [["model_grade", ">", 0.5]], "grade": "partial"}]
    write_rules(bundle_copy, lambda rules: rules["relevance"].update(post=post))
    with pytest.raises(
        BundleError,
        match=r"rules.json: relevance.post\[0\].grade: 'partial' is not one of the bundle's grades",
    ):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("grades", "message"),
    [
        (None, r"components.relevance.grades: needs at least two distinct grades"),
        (["irrelevant", "exact", "partial"], r"components.relevance.grades: .* is not ordered worst to best"),
        (["irrelevant", "great", "exact"], r"components.relevance.grades: unknown grades \['great'\]"),
        (
            ["irrelevant", "exact", "exact"],
            r"components.relevance.grades: needs at least two distinct grades",
        ),
        (list(ESCI_GRADES), r"components.relevance.outputs: .* expected float32\[batch, 4\]"),
    ],
)
def test_bad_grades_refused(bundle_copy: Path, grades: list[str] | None, message: str) -> None:
    _edit(bundle_copy, lambda m: m["components"]["relevance"].update(grades=grades))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_relevance_cosine_takes_the_query_vector_the_manifest_names(bundle_copy: Path) -> None:
    """A relevance model trained on the transformer query student's cosine (query_vector "query_student")
    gets that cosine when served; one without the field gets the hashed encoder's, as before; candidates
    given as titles keep the hashed encoder's vectors either way."""
    from server.service.heavy import HeavyWork, Slices
    from server.service.relevance import _candidate_features, _empty_lexical, _relevance_query_vector

    query = "modern oak dining table"
    rows = np.arange(6, dtype=np.int64)
    title_words = [["oak", "dining", "chair"]]
    all_rows = np.concatenate([rows, [-1]])

    def cosines(bundle) -> np.ndarray:
        async def features():
            started = _relevance_query_vector(bundle, query, None)
            assert (started is None) == (bundle.relevance_query_vector == "query_encoder")
            words = bundle.featurizer.words(query)
            lexical = _empty_lexical(7)
            slices = Slices(64)
            return await _candidate_features(
                bundle, started, words, title_words, all_rows, lexical, None, slices, HeavyWork()
            )

        return asyncio.run(features()).model_input[:, 0]

    # Bundles from before the choice name no query model: the hashed encoder's cosine.
    _edit(bundle_copy, lambda m: m["components"]["relevance"].pop("query_vector", None))
    before = load_bundle(bundle_copy)
    assert before.relevance_query_vector == "query_encoder"
    encoder_cosines = cosines(before)
    _edit(bundle_copy, lambda m: m["components"]["relevance"].update(query_vector="query_student"))
    after = load_bundle(bundle_copy)
    assert after.relevance_query_vector == "query_student"
    student, featurize = after.query_model()
    vector = student.run({"input_ids": featurize([query])})[0]
    products = after.index.vectors(rows)
    expected = products @ vector
    student_cosines = cosines(after)
    assert student_cosines[:6] == pytest.approx(expected, abs=2e-3)
    assert not np.allclose(student_cosines[:6], encoder_cosines[:6], atol=2e-3)
    # The title's vector is the hashed encoder's in both, so its cosine moves only with the query's vector.
    words = after.featurizer.words(query)
    hashed = after.query_encoder.run({"ids": after.featurizer.ids_of_words([words, title_words[0]])})
    assert student_cosines[6] == pytest.approx(float(hashed[1] @ vector), abs=2e-3)


def test_relevance_on_the_query_students_cosine_needs_a_query_student(bundle_copy: Path) -> None:
    def drop_student(m: dict) -> None:
        m["components"].pop("query_student")
        m["components"]["relevance"]["query_vector"] = "query_student"

    _edit(bundle_copy, drop_student)
    with pytest.raises(
        BundleError, match="query_vector: 'query_student', but the bundle has no query_student"
    ):
        load_bundle(bundle_copy)


def as_static_cosine_bundle(bundle: Path) -> None:
    """Adds a static word-piece model (random rows, the bundle's dimension) and says the relevance model
    reads its cosine from it, as `sift-train --relevance-cosine query_static` writes it."""
    from training.static_student import FILE, KIND, StaticStudent, export_static_onnx
    from training.teachers import minilm_dir
    from training.transformer_student import load_tokenizer

    manifest = json.loads((bundle / MANIFEST).read_text())
    rows = load_tokenizer(minilm_dir()).get_vocab_size()
    table = torch.randn(rows, manifest["embedding_dim"], generator=torch.Generator().manual_seed(3))
    export_static_onnx(StaticStudent(table), bundle / FILE)

    def add(m: dict) -> None:
        m["files"][FILE] = FileEntry.of(bundle / FILE).to_json()
        m["components"]["query_static"] = {
            "file": FILE,
            "description": "static word pieces (test)",
            "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "tokens"]}],
            "outputs": [{"name": "embedding", "dtype": "float32", "shape": ["batch", m["embedding_dim"]]}],
            "kind": KIND,
            "max_tokens": 32,
        }
        m["components"]["relevance"]["query_vector"] = "query_static"

    _edit(bundle, add)


def test_relevance_cosine_from_the_static_word_piece_model(bundle_copy: Path) -> None:
    """query_vector "query_static": the cosine of candidates by id is the product vectors times the static
    model's vector of the query (fed the bundle's tokenizer), and the call answers through the cascade."""
    from server.service.heavy import HeavyWork, Slices
    from server.service.relevance import _candidate_features, _empty_lexical, _relevance_query_vector

    as_static_cosine_bundle(bundle_copy)
    bundle = load_bundle(bundle_copy)
    assert bundle.relevance_query_vector == "query_static" and "query_static" in bundle.components
    query = "modern oak dining table"
    rows = np.arange(6, dtype=np.int64)

    async def features():
        started = _relevance_query_vector(bundle, query, None)
        assert started is not None
        words = bundle.featurizer.words(query)
        return await _candidate_features(
            bundle, started, words, [], rows, _empty_lexical(6), None, Slices(64), HeavyWork()
        )

    cosines = asyncio.run(features()).model_input[:, 0]
    vector = bundle.query_static.run({"input_ids": bundle.static_tokens.ids([query])})[0]
    assert cosines == pytest.approx(bundle.index.vectors(rows) @ vector, abs=2e-3)
    ids = [bundle.products.ids[i] for i in range(6)]
    scores = _score(bundle_copy, query, [CandidateInput(product_id=i) for i in ids])
    assert len(scores) == 6 and all(0.0 <= s.score <= 1.0 for s in scores)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["components"].pop("query_static"), "no query_static"),
        (lambda m: m["components"]["query_static"].pop("max_tokens"), "a static_wordpiece model needs"),
        (lambda m: m["components"]["query_static"].update(kind="bag"), "query_static.kind: 'bag'"),
        (
            lambda m: m["components"].pop("relevance"),
            "components.query_static: present, but the bundle cannot serve relevance",
        ),
    ],
)
def test_bad_static_word_piece_model_refused(bundle_copy: Path, change, message: str) -> None:
    as_static_cosine_bundle(bundle_copy)
    _edit(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)
