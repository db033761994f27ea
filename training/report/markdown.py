"""The report's Markdown and PNG plots, from results.json (training/report/ makes it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from training.report.markdown_real import (
    query_levers_section,
    real_esci_section,
    real_flipkart_section,
    real_queries_section,
    real_wands_section,
    served_relevance_section,
    wands_ceiling_section,
)
from training.report.tables import fmt, table

matplotlib.use("Agg")
import matplotlib.pyplot as plt


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
        lines += real_queries_section(results["real_queries"])
    if "served_relevance" in results:
        lines += served_relevance_section(results["served_relevance"])
    if "wands" in results:
        lines += real_wands_section(results["wands"])
    if "flipkart" in results:
        lines += real_flipkart_section(results["flipkart"])
    if "query_levers" in results:
        lines += query_levers_section(results["query_levers"])
    if "esci" in results:
        lines += real_esci_section(results["esci"])
    if "wands_ceiling" in results:
        lines += wands_ceiling_section(results["wands_ceiling"])
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
    lines += table(
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
        f"{fmt(r['int8_fp32_top1_agreement_real_queries'])}. Mean top probability: "
        f"{fmt(r['known_class_mean_top_probability'])} on queries of a known class, "
        f"{fmt(r['unknown_class_mean_top_probability'])} on those of unknown class.",
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
    lines += table(
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
        f"{fmt(np_['student_recall_at_10'])} (teacher {fmt(np_['teacher_recall_at_10'])}).",
        "",
        "### Relevance",
        "",
    ]
    rel = r["relevance"]
    rows = []
    for name, m in rel.items():
        row = {"variant": name, **{f"s_{k}": v for k, v in m["student"].items()}}
        # Results before the stacked teacher hold only the cross-encoder.
        row["teacher_ndcg"] = m.get("teacher", m.get("teacher_cross_encoder", {})).get("ndcg_at_10")
        row["teacher_name"] = m.get("teacher_name", "cross-encoder")
        row["bm25_ndcg"] = m["bm25"]["ndcg_at_10"]
        row["retention"] = m.get("retention")
        rows.append(row)
    lines += table(
        rows,
        [
            ("variant", "student"),
            ("s_ndcg_at_10", "NDCG@10"),
            ("teacher_name", "teacher"),
            ("teacher_ndcg", "teacher NDCG@10"),
            ("bm25_ndcg", "BM25 NDCG@10"),
            ("retention", "retention"),
            ("s_grade_accuracy", "grade accuracy"),
            ("s_accuracy_irrelevant", "acc. irrelevant"),
            ("s_accuracy_partial", "acc. partial"),
            ("s_accuracy_exact", "acc. exact"),
        ],
    )
    shipped = rel["shipped"]
    d = shipped.get("distillation") or {}
    if d.get("unlabelled_pairs"):
        sources = ", ".join(f"{k} {v:,}" for k, v in d["sources"].items())
        lines += [
            f"Shipped student: `{shipped['student_kind']}`, {shipped['student_parameters']:,} parameters, "
            f"learned from {d['labelled_pairs']:,} labelled pairs and {d['unlabelled_pairs']:,} unlabelled "
            f"pairs ({d['unlabelled_queries']:,} queries; by source: {sources}) that the teacher "
            f"({shipped.get('teacher_name', 'cross-encoder')}) labelled in "
            f"{d['teacher_labelling_seconds']:,} s.",
            "",
        ]
    if "teacher_cross_encoder" in shipped:
        t = shipped["teacher_cross_encoder"]
        lines += [
            f"Cross-encoder teacher grade accuracy {fmt(t.get('grade_accuracy'))} "
            f"(irrelevant {fmt(t.get('accuracy_irrelevant'))}, partial {fmt(t.get('accuracy_partial'))}, "
            f"exact {fmt(t.get('accuracy_exact'))}).",
            "",
        ]
    if "relevance_teachers" in r:
        lines += _relevance_teachers(r["relevance_teachers"])
    lines += ["Mined rules of the shipped student, with coverage and precision on the held-out pairs:", ""]
    rule_rows = [{"kind": "pre (golden)", **x} for x in shipped["pre_rules"]] + [
        {"kind": "post (corrective)", **x} for x in shipped["post_rules"]
    ]
    lines += table(
        rule_rows, [("kind", "kind"), ("rule", "rule"), ("coverage", "coverage"), ("precision", "precision")]
    )
    lines += ["### Teacher-student agreement on real query text", ""]
    agreement_rows = []
    for key, value in r.items():
        if key.startswith("real_query_agreement_"):
            agreement_rows.append({"what": f"query embedding vs {key.rsplit('_', 1)[1]} teacher", **value})
    lines += table(
        agreement_rows,
        [
            ("what", "what"),
            ("queries", "real queries"),
            ("mean_cosine", "mean cosine"),
            ("overlap_at_10", "retrieval overlap@10"),
        ],
    )
    if "real_query_relevance_agreement" in r:
        lines += _relevance_agreement(r["real_query_relevance_agreement"])
    if "esci_pairs_test" in r:
        e = r["esci_pairs_test"]
        lines += [
            f"**ESCI pairs, test split** (`{e['file']}`): {e['pairs']} real Amazon (query, product title) "
            f"pairs, {e['exact']} Exact (labels {e['labels']}). Exact against the rest, AUC with a 95% "
            "bootstrap interval over pairs; students score the title as a candidate given by text.",
            "",
        ]
        rows = [
            {"model": k, **v, "ci": f"{fmt(v['auc_ci'][0])}-{fmt(v['auc_ci'][1])}"}
            for k, v in e["auc_exact_vs_rest"].items()
        ]
        columns = [("model", "model"), ("auc", "AUC"), ("ci", "95% CI")]
        if any("share_of_teacher_auc" in row for row in rows):
            columns.append(("share_of_teacher_auc", "share of teacher AUC"))
        lines += table(rows, columns)
    return lines


def _relevance_teachers(t: dict[str, Any]) -> list[str]:
    """Each relevance teacher alone and stacked, on synthetic held-out pairs and on the ESCI test split."""
    lines = [
        f"**Relevance teachers, alone and stacked.** The students distil `{t['distilled']}`. Held-out "
        f'synthetic pairs ({t["eval_pairs"]:,}): nDCG@10 and grade accuracy; "through the stacker" is a '
        f"logistic regression over that teacher's features alone, fitted on the {t['dev_pairs']:,} dev pairs "
        "(which the cross-encoder never trained on) as the stack is; raw rows rank by the teacher's own "
        "output (a cosine has no grades).",
    ]
    if t.get("esci_pairs"):
        lines[-1] += (
            f" ESCI pairs test split ({t['esci_pairs']} real pairs): Exact against the rest, AUC with a 95% "
            "bootstrap interval over pairs."
        )
    lines.append("")
    grades = [k for k in t["rows"][0] if k.startswith("accuracy_")] if t["rows"] else []
    rows = []
    for row in t["rows"]:
        e = row.get("esci") or {}
        ci = e.get("auc_ci")
        rows.append(
            {**row, "esci_auc": e.get("auc"), "esci_ci": f"{fmt(ci[0])}-{fmt(ci[1])}" if ci else None}
        )
    columns = [("teacher", "teacher"), ("ndcg_at_10", "NDCG@10"), ("grade_accuracy", "grade accuracy")]
    columns += [(k, f"acc. {k.removeprefix('accuracy_')}") for k in grades]
    if t.get("esci_pairs"):
        columns += [("esci_auc", "ESCI AUC"), ("esci_ci", "95% CI")]
    lines += table(rows, columns)
    if w := t.get("stack_log_odds_best_over_worst_per_sd"):
        lines += [
            "What the stack leans on, per standard deviation of each feature: the log-odds of the best grade "
            "over the worst: " + ", ".join(f"{k} {v:+.2f}" for k, v in w.items()) + ".",
            "",
        ]
    return lines


def _relevance_agreement(a: dict[str, Any]) -> list[str]:
    """Student against cross-encoder teacher on real query text; older results hold one pooled figure."""
    if "spearman_pooled" in a:
        return [
            f"Relevance on a fixed set of {a['candidates_per_query']} products for each of {a['queries']} "
            f"real queries: Spearman of student and cross-encoder scores {fmt(a['spearman_pooled'])} "
            f"pooled, {fmt(a['spearman_mean_per_query'])} mean per query; grade agreement "
            f"{fmt(a['grade_agreement'])}.",
            "",
        ]
    what = {
        "fixed": "a fixed set of 20 catalogue products for every query",
        "retrieved": "the products retrieval returns for each query (BM25's and the two-tower's top 10)",
    }
    teacher = next(iter(a.values()), {}).get("teacher", "cross-encoder")
    lines = [
        "Relevance scores of the served students (int8, with the rules) against their teacher's "
        f"({teacher}) expected grade, on every real query's "
        "text: Spearman over all pairs (95% bootstrap interval over queries) and the mean of the per-query "
        "Spearman.",
        "",
    ]
    for set_name, block in a.items():
        lines += [
            f"**{block['queries']} real queries against {what.get(set_name, set_name)}** "
            f"({block['pairs']:,} pairs; teacher grade shares irrelevant/partial/exact "
            f"{'/'.join(fmt(x) for x in block['teacher_grade_shares'])}).",
            "",
        ]
        rows = [_with_cis({"student": name, **s}) for name, s in block["students"].items()]
        unseen = block.get("unseen_queries")
        columns = [
            ("student", "student"),
            ("kind", "kind"),
            ("spearman_pooled", "Spearman (pooled)"),
            ("ci", "95% CI"),
            ("spearman_mean_per_query", "mean per query"),
            ("grade_agreement", "grade agreement"),
        ]
        if unseen is not None and unseen < block["queries"]:
            lines += [
                f"{block['queries'] - unseen} of the queries (the real training split) and augmented copies "
                f"of them are among the students' unlabelled pairs; the last columns are the {unseen} "
                "queries that never entered training.",
                "",
            ]
            columns += [
                ("unseen_spearman_pooled", f"Spearman, {unseen} unseen queries"),
                ("unseen_ci", "95% CI"),
                ("unseen_spearman_mean_per_query", "mean per query (unseen)"),
            ]
        lines += table(rows, columns)
        if block.get("signals"):
            lines += [
                "How far one signal goes toward the teacher's ranking of the same pairs: each of the "
                "teacher's own parts, and the cosine feature as the students read it. Spearman is the same "
                "for any rising function of a signal, so no model that reads only that signal ranks closer.",
                "",
            ]
            signal_rows = [_with_cis({"student": name, **s}) for name, s in block["signals"].items()]
            lines += table(
                signal_rows, [("student", "signal")] + [c for c in columns[2:] if "grade" not in c[0]]
            )
    return lines


def _with_cis(row: dict[str, Any]) -> dict[str, Any]:
    """An agreement row with its bootstrap intervals as "lo-hi" text under `ci` and `unseen_ci`."""
    for key in ("", "unseen_"):
        if ci := row.get(f"{key}spearman_pooled_ci"):
            row[f"{key}ci"] = f"{fmt(ci[0])}-{fmt(ci[1])}"
    return row


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
    lines += table(
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
        lines += table(
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
    lines += table(
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
