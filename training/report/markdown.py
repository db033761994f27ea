"""The report's Markdown and PNG plots, from results.json (training/report/ makes it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    out = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(_fmt(row.get(key)) for key, _ in columns) + " |")
    return [*out, ""]


def write_report(results: dict[str, Any], out: Path) -> None:
    meta = results.get("meta", {})
    lines = [
        "# Sift quality report",
        "",
        f"Made on {meta.get('machine', '?')}, Python {meta.get('python', '?')}, part by part (a part is "
        "rerun alone with `--parts`, the others are kept from `results.json`; `--parts '[]'` only rewrites "
        "this file):",
        "",
        *[
            f"- {part}: `{results[part]['command']}` ({results[part]['seconds']:,.0f} s)"
            for part in ("intent", "catalogue", "layers", "latency")
            if part in results
        ],
        "",
        "Every figure below is in `results.json` beside this file.",
        "",
    ]
    if "intent" in results:
        lines += _intent(results["intent"], out)
    if "catalogue" in results:
        lines += _catalogue(results["catalogue"])
    if "layers" in results:
        lines += _layers(results["layers"], out)
    if "latency" in results:
        lines += _latency(results["latency"], out)
    if "intent" in results and "latency" in results:
        lines += _decision(results["intent"], results["latency"])
    if "real_queries" in results:
        lines += _real_queries(results["real_queries"])
    if "wands" in results:
        lines += _real_wands(results["wands"])
    if "flipkart" in results:
        lines += _real_flipkart(results["flipkart"])
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _intent(r: dict[str, Any], out: Path) -> list[str]:
    rows = r["rows"]
    for row in rows:
        lo, hi = row["top1_ci"]
        row["ci"] = f"{lo:.3f}-{hi:.3f}"
    lines = [
        "## Intent on real queries",
        "",
        f"Data: `{r['data']}` as a taxonomy-only input ({r['labels']} labels). Evaluated on the {r['eval']}. "
        f"Distillation set by source: {', '.join(f'{k} {v:,}' for k, v in r['sources'].items())}. "
        "Retention is a student's top-1 over the (stacked) teacher's; agreement is how often it gives the "
        "teacher's top-1, on the test queries and on all real query text.",
        "",
    ]
    lines += _table(
        rows,
        [
            ("name", "model"),
            ("kind", "kind"),
            ("top1", "top-1"),
            ("ci", "95% CI"),
            ("macro_f1", "macro-F1"),
            ("retention", "retention"),
            ("agreement_eval", "agreement (test)"),
            ("agreement_real_queries", "agreement (all real text)"),
            ("parameters", "parameters"),
            ("train_seconds", "train s"),
        ],
    )
    lines += [
        f"int8 vs fp32 top-1 agreement of the shipped student on all real query text: "
        f"{_fmt(r['int8_fp32_top1_agreement_real_queries'])}. Mean top probability: "
        f"{_fmt(r['known_class_mean_top_probability'])} on queries of a known class, "
        f"{_fmt(r['unknown_class_mean_top_probability'])} on those of unknown class.",
        "",
        "![intent top-1](intent_top1.png)",
        "",
        "![temperature sweep](temperature.png)",
        "",
    ]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1))
    names = [row["name"][:70] for row in rows]
    tops = [row["top1"] for row in rows]
    err = [
        [t - row["top1_ci"][0] for t, row in zip(tops, rows, strict=True)],
        [row["top1_ci"][1] - t for t, row in zip(tops, rows, strict=True)],
    ]
    colors = [
        "tab:gray" if r_["kind"] == "floor" else "tab:blue" if r_["kind"] == "teacher" else "tab:orange"
        for r_ in rows
    ]
    ax.barh(names, tops, xerr=err, color=colors)
    ax.invert_yaxis()
    ax.set_xlabel("top-1 accuracy on the real test split (95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(out / "intent_top1.png", dpi=110)
    plt.close(fig)
    sweep = r["temperature_sweep"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([s["temperature"] for s in sweep], [s["top1"] for s in sweep], "o-", label="top-1")
    ax.plot([s["temperature"] for s in sweep], [s["agreement"] for s in sweep], "s--", label="agreement")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("distillation temperature T")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "temperature.png", dpi=110)
    plt.close(fig)
    return lines


def _catalogue(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Retrieval and relevance on held-out products (JD protocol)",
        "",
        f"The embedded synthetic catalogue ({r['products']:,} products, {r['heldout_products']:,} held out): "
        "a random substring of a held-out product's title is the query and that product the target.",
        "",
        "### Retrieval",
        "",
    ]
    rows = []
    for row in r["retrieval"]:
        rows.append(
            {
                **row,
                "teacher_recall_at_10": row.get("teacher_recall_at_10"),
                "recall": row.get("student_recall_at_10", row.get("recall_at_10")),
                "mrr_": row.get("student_mrr", row.get("mrr")),
            }
        )
    lines += _table(
        rows,
        [
            ("product_teacher", "product tower (teacher)"),
            ("views", "views"),
            ("teacher_recall_at_10", "teacher recall@10"),
            ("teacher_mrr", "teacher MRR"),
            ("recall", "student (or BM25) recall@10"),
            ("mrr_", "student MRR"),
            ("retention", "retention"),
            ("student_teacher_overlap_at_10", "overlap@10"),
            ("student_parameters", "student parameters"),
        ],
    )
    np_ = r["retrieval_without_substring_pairs"]
    lines += [
        f"Without the substring-product pairs (in-batch negatives), the student's recall@10 is "
        f"{_fmt(np_['student_recall_at_10'])} (teacher {_fmt(np_['teacher_recall_at_10'])}).",
        "",
        "### Relevance",
        "",
    ]
    rel = r["relevance"]
    rows = []
    for name, m in rel.items():
        row = {"variant": name, **{f"s_{k}": v for k, v in m["student"].items()}}
        row["teacher_ndcg"] = m.get("teacher_cross_encoder", {}).get("ndcg_at_10")
        row["bm25_ndcg"] = m["bm25"]["ndcg_at_10"]
        row["retention"] = m.get("retention")
        rows.append(row)
    lines += _table(
        rows,
        [
            ("variant", "student"),
            ("s_ndcg_at_10", "NDCG@10"),
            ("teacher_ndcg", "cross-encoder teacher NDCG@10"),
            ("bm25_ndcg", "BM25 NDCG@10"),
            ("retention", "retention"),
            ("s_grade_accuracy", "grade accuracy"),
            ("s_accuracy_irrelevant", "acc. irrelevant"),
            ("s_accuracy_partial", "acc. partial"),
            ("s_accuracy_exact", "acc. exact"),
        ],
    )
    shipped = rel["shipped"]
    if "teacher_cross_encoder" in shipped:
        t = shipped["teacher_cross_encoder"]
        lines += [
            f"Cross-encoder teacher grade accuracy {_fmt(t.get('grade_accuracy'))} "
            f"(irrelevant {_fmt(t.get('accuracy_irrelevant'))}, partial {_fmt(t.get('accuracy_partial'))}, "
            f"exact {_fmt(t.get('accuracy_exact'))}).",
            "",
        ]
    lines += ["Mined rules of the shipped student, with coverage and precision on the held-out pairs:", ""]
    rule_rows = [{"kind": "pre (golden)", **x} for x in shipped["pre_rules"]] + [
        {"kind": "post (corrective)", **x} for x in shipped["post_rules"]
    ]
    lines += _table(
        rule_rows, [("kind", "kind"), ("rule", "rule"), ("coverage", "coverage"), ("precision", "precision")]
    )
    lines += ["### Teacher-student agreement on real query text", ""]
    agreement_rows = []
    for key, value in r.items():
        if key.startswith("real_query_agreement_"):
            agreement_rows.append({"what": f"query embedding vs {key.rsplit('_', 1)[1]} teacher", **value})
    lines += _table(
        agreement_rows,
        [
            ("what", "what"),
            ("queries", "real queries"),
            ("mean_cosine", "mean cosine"),
            ("overlap_at_10", "retrieval overlap@10"),
        ],
    )
    if "real_query_relevance_agreement" in r:
        a = r["real_query_relevance_agreement"]
        lines += [
            f"Relevance on a fixed set of {a['candidates_per_query']} products for each of {a['queries']} "
            f"real queries: Spearman of student and cross-encoder scores {_fmt(a['spearman_pooled'])} "
            f"pooled, {_fmt(a['spearman_mean_per_query'])} mean per query; grade agreement "
            f"{_fmt(a['grade_agreement'])}.",
            "",
        ]
    return lines


def _layers(r: dict[str, Any], out: Path) -> list[str]:
    lines = [
        "## Layer freezing and dropping (teacher fine-tuning)",
        "",
        f"MiniLM-L6 fine-tuned for intent on {r['fine_tuning_texts']:,} labelled texts, one epoch each; "
        "top-1 "
        "on the real test split. Freezing caches the frozen layers' output once, so the epochs only run the "
        "top.",
        "",
    ]
    lines += _table(
        r["rows"],
        [
            ("config", "configuration"),
            ("train_seconds", "train s"),
            ("time_vs_full", "time vs full"),
            ("trainable_parameters", "trainable parameters"),
            ("top1", "top-1"),
        ],
    )
    lines += [
        "## Kernel analysis of teacher layers",
        "",
        "Kernel-target alignment (RBF) and kernel ridge regression accuracy of each layer's mean-pooled "
        "embedding on a sample of labelled texts: a cheap predictor of a layer's value for the task.",
        "",
    ]
    for name, layers in r["kernel"].items():
        lines += [f"**{name}**", ""]
        lines += _table(
            layers,
            [
                ("layer", "layer"),
                ("kta_linear", "KTA linear"),
                ("kta_rbf", "KTA RBF"),
                ("krr_accuracy", "KRR accuracy"),
            ],
        )
    for key, c in r["kernel_check"].items():
        lines.append(
            f"- {key} of MiniLM layers {c['layers']}: {[round(x, 3) for x in c['kernel']]}; fine-tuned top-1 "
            f"of the model cut at that layer: {c['fine_tuned_top1']}; Spearman {c['spearman']}."
        )
    if "kernel_choice" in r:
        c = r["kernel_choice"]
        lines.append(
            f"- The kernel score picks layer {c['best_layer']} per teacher and the {c['best_teacher']} "
            "teacher; the intent table above shows whether the fine-tuned teachers agree."
        )
    lines += ["", "![kernel](kernel.png)", ""]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, layers in r["kernel"].items():
        ax.plot(
            [x["layer"] / (len(layers) - 1) for x in layers],
            [x["krr_accuracy"] for x in layers],
            "o-",
            label=name,
        )
    ax.set_xlabel("relative depth (layer / last layer)")
    ax.set_ylabel("kernel ridge accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "kernel.png", dpi=110)
    plt.close(fig)
    return lines


def _latency(r: dict[str, Any], out: Path) -> list[str]:
    lines = [
        "## Latency per call (batch 1, one thread)",
        "",
        "Median over repeated calls, tokenization or featurization included; `x` is the ratio to the shipped "
        "student's median measured in the same run.",
        "",
    ]
    lines += _table(
        r["rows"],
        [
            ("model", "model"),
            ("median_ms", "median ms"),
            ("p90_ms", "p90 ms"),
            ("vs_student_int8", "x student"),
        ],
    )
    lines += ["![latency](latency.png)", ""]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(r["rows"]) + 1))
    ax.barh([x["model"][:60] for x in r["rows"]], [x["median_ms"] for x in r["rows"]])
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("median ms per call (log scale)")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    return lines


def _decision(intent: dict[str, Any], latency: dict[str, Any]) -> list[str]:
    """Which intent student ships, from the figures above: the feed-forward student unless it misses the
    97% retention bar, because it answers in a fraction of the transformer student's time."""
    rows = {r["kind"]: r for r in intent["rows"]}
    ff = rows.get("student (ships)")
    tr = next((r for r in intent["rows"] if r["name"].startswith("small transformer")), None)
    lat = {r["model"]: r["median_ms"] for r in latency["rows"]}
    ff_ms = next((v for k, v in lat.items() if k.startswith("BERT2DNN student, ONNX int8")), None)
    tr_ms = next((v for k, v in lat.items() if k.startswith("small transformer")), None)
    if not (ff and tr and ff_ms and tr_ms):
        return []
    ships = (
        "the BERT2DNN feed-forward student" if ff["retention"] >= 0.97 else "the small transformer student"
    )
    return [
        "## Which student ships",
        "",
        f"Intent: {ships}. The feed-forward student keeps {ff['retention']:.1%} of the stacked teachers' "
        f"top-1 on the real test split at {ff_ms:.3f} ms per query; the 2-layer transformer student keeps "
        f"{tr['retention']:.1%} at {tr_ms:.3f} ms ({tr_ms / ff_ms:.0f}x slower). Their top-1 intervals "
        f"overlap ({ff['top1_ci']} and {tr['top1_ci']}), so the measured difference does not buy its cost "
        "on every query; the rule is: ship the feed-forward student whenever it keeps >= 97% of its teacher.",
        "Retrieval and relevance: the feed-forward query encoder and the tiered feature MLP (the only "
        "students of those tasks), with the retention shown in the catalogue tables.",
        "",
    ]


def _ci(interval: list[Any] | None) -> str:
    if not interval or interval[0] is None:
        return "-"
    return f"{interval[0]:.3f}-{interval[1]:.3f}"


def _made_by(r: dict[str, Any]) -> list[str]:
    return [
        f"Made by `{r['command']}` ({r['seconds']:,.0f} s), bundle `{r['bundle']}` ({r['bundle_version']}).",
        "",
    ]


def _real_queries(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Query side on real query text (default bundle)",
        "",
        *_made_by(r),
        f"Every distinct real query staged ({', '.join(f'{k} {v:,}' for k, v in r['sources'].items())}; none "
        f"seen in training) is embedded by the served query model and by the teacher ({r['teacher']}) whose "
        "space the index is in. Cosine of the two vectors per query; overlap@10 is the share of the index's "
        f"top 10 ({r['index_products']:,} products) for the served vector that is also in the top 10 for the "
        f"teacher's vector. Targets: mean cosine >= {r['targets']['mean_cosine']}, overlap@10 >= "
        f"{r['targets']['overlap_at_10']}. Intervals are 95% bootstrap over queries.",
        "",
    ]
    rows = [{**x, "cos_ci": _ci(x["cosine_ci95"]), "ov_ci": _ci(x["overlap_ci95"])} for x in r["rows"]]
    lines += _table(
        rows,
        [
            ("model", "query model"),
            ("source", "queries from"),
            ("queries", "n"),
            ("mean_cosine", "mean cosine"),
            ("cos_ci", "95% CI"),
            ("cosine_p10", "10th pct cosine"),
            ("overlap_at_10", "overlap@10"),
            ("ov_ci", "95% CI"),
        ],
    )
    t = r["tokens"]
    lines += [f"Vocabulary: {t['measures']}.", ""]
    lines += _table(
        t["rows"],
        [
            ("source", "queries from"),
            ("word_pieces", "word pieces"),
            ("tokenizer_not_unk", "not [UNK] (tokenizer)"),
            ("student_kept", "kept by the student's vocabulary"),
        ],
    )
    if "recorded_catalogue_tokens_kept" in t:
        lines += [
            f"Recorded at training (manifest): the student keeps {_fmt(t['recorded_catalogue_tokens_kept'])} "
            "of the training catalogue's word pieces.",
            "",
        ]
    if r.get("missing_files"):
        lines += [f"Missing data files (skipped): {', '.join(r['missing_files'])}.", ""]
    return lines


def _real_wands(r: dict[str, Any]) -> list[str]:
    lines = [
        "## WANDS intent (taxonomy bundle, test split)",
        "",
        *_made_by(r),
        f"{r['test_queries']} test queries of `wands-queries/queries.tsv` ({r['known_class_queries']} of a "
        f"known class, {r['unknown_class_queries']} with an empty class, {r['unmapped_class_queries']} of a "
        f"class the bundle lacks), {r['labels']} labels. The student is the served ClassifyIntent "
        f"(golden rule, then the intent model; {r['answered_by_rule']} answered by the rule), called "
        f"in-process. Target: top-1 >= {r['target_top1']}. Intervals are 95% bootstrap over queries.",
        "",
    ]
    rows = [{**x, "t_ci": _ci(x["top1_ci95"]), "f_ci": _ci(x["macro_f1_ci95"])} for x in r["rows"]]
    lines += _table(
        rows,
        [
            ("name", "model"),
            ("kind", "kind"),
            ("top1", "top-1"),
            ("t_ci", "95% CI"),
            ("macro_f1", "macro-F1"),
            ("f_ci", "95% CI"),
            ("queries", "queries"),
        ],
    )
    ret = r["retention_vs_zero_shot"]
    known, unk, unk_all = (
        r["mean_top_probability_known"],
        r["mean_top_probability_unknown_test"],
        r["mean_top_probability_unknown_all_splits"],
    )
    lines += [
        f"- Student over MiniLM zero-shot on the same queries: {_fmt(ret['retention'])} (paired 95% CI "
        f"{_ci(ret['ci95'])}).",
        "- Teacher figures recorded in the bundle's manifest at training time (on "
        f"{r['recorded_eval'] or '?'}): "
        + (", ".join(f"{k} {_fmt(v)}" for k, v in r["recorded_teacher"].items()) or "none recorded")
        + ".",
        f"- Mean top probability: {_fmt(known['mean'])} ({_ci(known['ci95'])}, n {known['n']}) on queries "
        f"of a known class; {_fmt(unk['mean'])} (n {unk['n']}) on test queries of no class; "
        f"{_fmt(unk_all['mean'])} "
        f"({_ci(unk_all['ci95'])}, n {unk_all['n']}) on the empty-class queries of every split (train and "
        "dev ones may have been seen in training).",
        f"- Expected calibration error of the served probabilities (15 bins, known-class queries): "
        f"{_fmt(r['ece'])} (95% CI {_ci(r['ece_ci95'])}).",
        "- Latency in-process, 1 in flight: ClassifyIntent p50 "
        f"{_fmt(r['latency_classify_intent']['p50_ms'])} ms "
        f"(p90 {_fmt(r['latency_classify_intent']['p90_ms'])}); the intent model alone "
        f"(featurize + ONNX run) p50 {_fmt(r['latency_intent_model']['p50_ms'])} ms.",
        "",
    ]
    return lines


def _real_flipkart(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Flipkart names (catalogue bundle, test split)",
        "",
        *_made_by(r),
        f"Each of the {r['distinct_test_names']:,} distinct test product names ({r['test_rows']:,} rows of "
        "`flipkart-names/products_test.csv`, de-duplicated lower-cased with whitespace squeezed so that size "
        f"and colour variants vote once; {r['names_with_two_categories']} names with two categories take "
        f"their most frequent; {r['names_of_a_class_the_bundle_lacks']} are of a class the bundle lacks and "
        "count as errors) is a query, against the bundle's catalogue of "
        f"{r['catalogue_products']:,} products (train CSV rows: {_fmt(r['train_csv_rows'])}). These are "
        "product titles, not shopper queries. Intervals are 95% bootstrap over names; retention intervals "
        "are paired.",
        "",
        "### Intent (gold: cat_l1)",
        "",
    ]
    lines += _table(
        [{**x, "ci": _ci(x["top1_ci95"])} for x in r["intent_rows"]],
        [("name", "model"), ("kind", "kind"), ("top1", "top-1"), ("ci", "95% CI"), ("queries", "names")],
    )
    ret = r["intent_retention"]
    lines += [
        f"Student over teacher: {_fmt(ret['retention'])} (95% CI {_ci(ret['ci95'])}); target >= "
        f"{r['targets']['intent_retention']}.",
        "",
        "### Similar-product search",
        "",
        "precision@10: the share of the 10 hits in the query product's own category. Served Search in each "
        f"mode the bundle serves (default: {r['default_mode']}); teacher: exact k-NN by "
        f"{r['product_teacher']} cosine; x teacher: ratio to the teacher, target >= "
        f"{r['targets']['search_vs_teacher']}.",
        "",
    ]
    lines += _table(
        [{**x, "ci": _ci(x["ci95"]), "vci": _ci(x.get("vs_teacher_ci95"))} for x in r["search_rows"]],
        [
            ("name", "model"),
            ("kind", "kind"),
            ("precision_at_10", "precision@10"),
            ("ci", "95% CI"),
            ("vs_teacher", "x teacher"),
            ("vci", "95% CI"),
        ],
    )
    lat = r["latency_classify_intent"]
    lines += [
        f"Latency in-process, 1 in flight, p50 (p90): ClassifyIntent {_fmt(lat['p50_ms'])} ms "
        f"({_fmt(lat['p90_ms'])}); "
        + "; ".join(
            f"Search {mode} {_fmt(x['p50_ms'])} ms ({_fmt(x['p90_ms'])})"
            for mode, x in r["latency_search"].items()
        )
        + f". Search in the default mode over ClassifyIntent: {_fmt(r['latency_search_default_vs_intent'])}x "
        "(in-process, not a sift-bench run).",
        "",
    ]
    return lines
