"""The report's sections on shipped bundles against the real data sets (parts real_queries, wands and
flipkart): one table per data set, each with 95% intervals and the command that made it."""

from __future__ import annotations

from typing import Any

from training.report.tables import fmt, table


def _ci(interval: list[Any] | None) -> str:
    if not interval or interval[0] is None:
        return "-"
    return f"{interval[0]:.3f}-{interval[1]:.3f}"


def _with_ci(m: dict[str, Any]) -> str:
    """A mean_ci result as "mean (low-high)"."""
    return f"{fmt(m['mean'])} ({_ci(m['ci95'])})"


def _made_by(r: dict[str, Any]) -> list[str]:
    return [
        f"Made by `{r['command']}` ({r['seconds']:,.0f} s), bundle `{r['bundle']}` ({r['bundle_version']}).",
        "",
    ]


def real_queries_section(r: dict[str, Any]) -> list[str]:
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
    lines += table(
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
    if by_match := r.get("overlap_by_match"):
        lines += [
            "Overlap@10 of the served model by how well the catalogue answers the query (the teacher's best "
            "cosine to any product): a query the catalogue has nothing for gets a top 10 of near-equal weak "
            "scores, whose order any small change in the query vector reshuffles.",
            "",
        ]
        lines += table(
            [{**x, "ov_ci": _ci(x["overlap_ci95"])} for x in by_match],
            [
                ("teacher_best_cosine", "teacher's best cosine"),
                ("queries", "n"),
                ("overlap_at_10", "overlap@10"),
                ("ov_ci", "95% CI"),
            ],
        )
    if index := r.get("index"):
        lines += _index_lines(index)
    t = r["tokens"]
    lines += [f"Vocabulary: {t['measures']}.", ""]
    lines += table(
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
            f"Recorded at training (manifest): the student keeps {fmt(t['recorded_catalogue_tokens_kept'])} "
            "of the training catalogue's word pieces.",
            "",
        ]
    if c := r.get("choice"):
        lines += [f"Which query model ships: {c['rule']}.", ""]
        lines += table(
            [{**x, "within_budget": "yes" if x["within_budget"] else "no"} for x in c["candidates"]],
            [
                ("model", "query model"),
                ("mean_cosine", "mean cosine (all)"),
                ("p50_ms", "embed p50 ms"),
                ("p90_ms", "embed p90 ms"),
                ("within_budget", f"<= {c['budget_ms']} ms"),
            ],
        )
        verdict = (
            "the bundle serves it"
            if c["served_is_chosen"]
            else "the bundle serves the other: training ships the query model the preset's `query_student` "
            "names, and this rule, measured on this machine, disagrees with it"
        )
        lines += [f"Chosen: {c['chosen']}; {verdict}.", ""]
    if r.get("missing_files"):
        lines += [f"Missing data files (skipped): {', '.join(r['missing_files'])}.", ""]
    return lines


def served_relevance_section(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Served relevance on real query text (default bundle)",
        "",
        *_made_by(r),
        f"Every distinct real query staged ({r['queries']:,}; none seen in training) is scored by the served "
        f"ScoreRelevance (in this process: rules, the `{r['relevance_kind']}` model, its cosine from "
        f"`{r['query_vector']}`) and by the teacher its training distilled ({r['teacher']}, from the stage "
        f"cache `{r['stages']}`), against the same {r['sets']['fixed']['products_per_query']:g} catalogue "
        "products for every query (fixed) and against the products the bundle's Search returns for it "
        "(its default mode's top 10 and dense's; retrieved). Spearman of the served score with the "
        "teacher's expected grade, pooled over pairs (95% bootstrap interval over queries) and the mean per "
        f"query; grade agreement is the share of pairs where the served grade is the teacher's most likely "
        f"one. Target: Spearman >= {r['target']}.",
        "",
    ]
    lines += table(
        [{"set": name, **x, "ci": _ci(x["spearman_pooled_ci"])} for name, x in r["sets"].items()],
        [
            ("set", "candidates"),
            ("pairs", "pairs"),
            ("spearman_pooled", "Spearman (pooled)"),
            ("ci", "95% CI"),
            ("spearman_mean_per_query", "mean per query"),
            ("grade_agreement", "grade agreement"),
            ("spearman_query_means", "query means"),
            ("spearman_pooled_teacher_means", "pooled, at the teacher's query means"),
        ],
    )
    lines += [
        "",
        "The pooled figure also asks each query's scores to sit at the teacher's level for that query: "
        "`query means` is the Spearman of the queries' mean scores, and the last column the pooled Spearman "
        "once each query's served scores are shifted to the teacher's mean for it.",
        "",
        "By where the queries come from, and single signals on all of them:",
        "",
    ]
    rows = [
        {"set": name, "what": f"{src} ({x['queries']})", **x, "ci": _ci(x["spearman_pooled_ci"])}
        for name, st in r["sets"].items()
        for src, x in st["by_source"].items()
    ]
    rows += [
        {"set": name, "what": signal, **x, "ci": _ci(x["spearman_pooled_ci"])}
        for name, st in r["sets"].items()
        for signal, x in st["signals"].items()
    ]
    lines += table(
        rows,
        [
            ("set", "candidates"),
            ("what", "queries, or signal"),
            ("spearman_pooled", "Spearman (pooled)"),
            ("ci", "95% CI"),
            ("spearman_mean_per_query", "mean per query"),
        ],
    )
    for key, what in (
        ("esci_pairs_test", "ESCI pairs test split"),
        ("esci_pairs_all", "ESCI pairs, every split (none of them in this bundle's training data)"),
    ):
        if esci := r.get(key):
            lines += _esci_pairs_lines(esci, what)
    return lines


def _esci_pairs_lines(esci: dict[str, Any], what: str) -> list[str]:
    lines = [
        "",
        f"{what} (`{esci['file']}`, {esci['pairs']} real pairs, labels {esci['labels']}): "
        "Exact against the rest, AUC with a 95% bootstrap interval over pairs, and each row's paired "
        "difference from BM25 (the same resamples for both). The served ScoreRelevance gets each title "
        "as text; the teacher is the one this bundle distilled.",
        "",
    ]
    rows = [
        {
            "what": name,
            **x,
            "ci": _ci(x["auc_ci"]),
            "diff_ci": _ci(x["difference_ci"]) if "difference_ci" in x else "-",
            "vs": x.get("vs_bm25", "-"),
        }
        for name, x in esci["auc"].items()
    ]
    lines += table(
        rows,
        [
            ("what", "scores"),
            ("auc", "AUC"),
            ("ci", "95% CI"),
            ("share_of_teacher_auc", "share of teacher AUC"),
            ("difference", "minus BM25"),
            ("diff_ci", "95% CI"),
            ("vs", "vs BM25"),
        ],
    )
    return lines


def _index_lines(index: dict[str, Any]) -> list[str]:
    """The ANN graph's share of the top-10 disagreement, and the relevance cosine feature's agreement."""
    sweep = index["expansions"]
    exact = sweep["exact_overlap_at_10"]
    lines = [
        "What the ANN graph adds: recall@10 of the index (usearch, at each expansion) against exact search "
        "over the same product vectors, for the served query vectors and the teacher's; overlap@10 of the "
        "two through the index; the index search's latency (one query, one thread). By exact search on both "
        f"sides (the query vectors alone), overlap@10 is {_with_ci(exact)}. Search "
        f"runs at `--search-expansion` (default {sweep['served_expansion']}).",
        "",
    ]
    if fp32 := sweep.get("fp32_exact_overlap_at_10"):
        lines += [
            "The same student before int8 (its fp32 export, beside the bundle) reaches, by exact search on "
            f"both sides, overlap@10 {_with_ci(fp32)}: what quantization costs the served student. It embeds "
            f"a query in {index['fp32_embed']['p50_ms']} ms p50 on one thread, against "
            f"{index['served_embed']['p50_ms']} ms for the served int8 graph in the same run.",
            "",
        ]

    lines += table(
        [
            {
                "expansion": x["expansion"],
                "served": _with_ci(x["served_recall_at_10"]),
                "teacher": _with_ci(x["teacher_recall_at_10"]),
                "overlap": _with_ci(x["overlap_at_10"]),
                "p50": x["search"]["p50_ms"],
                "p90": x["search"]["p90_ms"],
            }
            for x in sweep["rows"]
        ],
        [
            ("expansion", "expansion"),
            ("served", "recall@10, served vectors (95% CI)"),
            ("teacher", "recall@10, teacher's vectors"),
            ("overlap", "overlap@10 (95% CI)"),
            ("p50", "search p50 ms"),
            ("p90", "search p90 ms"),
        ],
    )
    rel = index["relevance_cosine"]
    lines += [
        "ScoreRelevance's cosine feature for a product given by id is the query model's vector against the "
        "product's title vector, and the relevance teacher stacks the teacher's own (query, title) cosine "
        "with the cross-encoder. "
        f"Spearman of the two over the {rel['queries']:,} real queries x {rel['products']} products sampled "
        "once (pooled, 95% bootstrap interval over queries; and the mean per query):",
        "",
    ]
    lines += table(
        [{**x, "ci": _ci(x["ci95"])} for x in rel["rows"]],
        [
            ("model", "query model"),
            ("spearman_pooled", "Spearman (pooled)"),
            ("ci", "95% CI"),
            ("spearman_mean_per_query", "mean per query"),
        ],
    )
    return lines


def real_wands_section(r: dict[str, Any]) -> list[str]:
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
    lines += table(
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
        f"- Student over MiniLM zero-shot on the same queries: {fmt(ret['retention'])} (paired 95% CI "
        f"{_ci(ret['ci95'])}).",
        "- Teacher figures recorded in the bundle's manifest at training time (on "
        f"{r['recorded_eval'] or '?'}): "
        + (", ".join(f"{k} {fmt(v)}" for k, v in r["recorded_teacher"].items()) or "none recorded")
        + ".",
        f"- Mean top probability: {fmt(known['mean'])} ({_ci(known['ci95'])}, n {known['n']}) on queries "
        f"of a known class; {fmt(unk['mean'])} (n {unk['n']}) on test queries of no class; "
        f"{fmt(unk_all['mean'])} "
        f"({_ci(unk_all['ci95'])}, n {unk_all['n']}) on the empty-class queries of every split (train and "
        "dev ones may have been seen in training).",
        f"- Expected calibration error of the served probabilities (15 bins, known-class queries): "
        f"{fmt(r['ece'])} (95% CI {_ci(r['ece_ci95'])}).",
        "- Latency in-process, 1 in flight: ClassifyIntent p50 "
        f"{fmt(r['latency_classify_intent']['p50_ms'])} ms "
        f"(p90 {fmt(r['latency_classify_intent']['p90_ms'])}); the intent model alone "
        f"(featurize + ONNX run) p50 {fmt(r['latency_intent_model']['p50_ms'])} ms.",
        "",
    ]
    return lines


def real_flipkart_section(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Flipkart names (catalogue bundle, test split)",
        "",
        *_made_by(r),
        f"Each of the {r['distinct_test_names']:,} distinct test product names ({r['test_rows']:,} rows of "
        "`flipkart-names/products_test.csv`, de-duplicated lower-cased with whitespace squeezed so that size "
        f"and colour variants vote once; {r['names_with_two_categories']} names with two categories take "
        f"their most frequent; {r['names_of_a_class_the_bundle_lacks']} are of a class the bundle lacks and "
        "count as errors) is a query, against the bundle's catalogue of "
        f"{r['catalogue_products']:,} products (train CSV rows: {fmt(r['train_csv_rows'])}). These are "
        "product titles, not shopper queries. Intervals are 95% bootstrap over names; retention intervals "
        "are paired.",
        "",
        "### Intent (gold: cat_l1)",
        "",
    ]
    lines += table(
        [{**x, "ci": _ci(x["top1_ci95"])} for x in r["intent_rows"]],
        [("name", "model"), ("kind", "kind"), ("top1", "top-1"), ("ci", "95% CI"), ("queries", "names")],
    )
    ret = r["intent_retention"]
    lines += [
        f"Student over teacher: {fmt(ret['retention'])} (95% CI {_ci(ret['ci95'])}); target >= "
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
    lines += table(
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
        f"Latency in-process, 1 in flight, p50 (p90): ClassifyIntent {fmt(lat['p50_ms'])} ms "
        f"({fmt(lat['p90_ms'])}); "
        + "; ".join(
            f"Search {mode} {fmt(x['p50_ms'])} ms ({fmt(x['p90_ms'])})"
            for mode, x in r["latency_search"].items()
        )
        + f". Search in the default mode over ClassifyIntent: {fmt(r['latency_search_default_vs_intent'])}x "
        "(in-process, not a sift-bench run).",
        "",
    ]
    return lines


def query_levers_section(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Query student: which MiniLM layers to keep",
        "",
        f"Made by `{r['command']}` ({r['seconds']:,.0f} s).",
        "",
        f"Each choice of MiniLM's layers is distilled as the {r['preset']} preset's query student is "
        f"({r['distillation_texts']:,} teacher-labelled texts over the embedded catalogue), exported to int8 "
        f"through the parity gate, and compared with the teacher ({r['teacher']}) on the "
        f"{r['real_queries']:,} distinct real WANDS and ESCI queries (none seen in training): cosine, and "
        f"overlap@10 of the exact top 10 over the catalogue's {r['products']:,} teacher title vectors. "
        "Intervals are 95% bootstrap over queries. Embed p50: one query at a time on one thread, tokenizer "
        f"included, the choices taking turns over {r['latency_rounds']} rounds (the median of the rounds' "
        "p50s; `x preset` is the median of each round's ratio to the preset's choice).",
        "",
    ]
    rows = [
        {
            **x,
            "layers_shown": ", ".join(map(str, x["layers"]))
            + (" (the preset's)" if x["shipped_by_preset"] else ""),
            "ci": _ci(x["cosine_ci95"]),
            "overlap_ci": _ci(x["overlap_ci95"]),
        }
        for x in r["rows"]
    ]
    lines += table(
        rows,
        [
            ("layers_shown", "teacher layers kept"),
            ("mean_cosine", "mean cosine"),
            ("ci", "95% CI"),
            ("cosine_p10", "10th pct cosine"),
            ("overlap_at_10", "overlap@10"),
            ("overlap_ci", "95% CI"),
            ("embed_p50_ms", "embed p50 ms"),
            ("embed_x_preset", "x preset"),
            ("final_loss", "last epoch loss"),
            ("train_seconds", "train s"),
            ("int8", "int8 scheme"),
        ],
    )
    return lines


def real_esci_section(r: dict[str, Any]) -> list[str]:
    pairs, labels = r["pairs"], r["labels"]

    def counts(split: str) -> str:
        return ", ".join(f"{g} {n}" for g, n in labels[split].items())

    ce = r["cross_encoder"]
    lines = [
        "## ESCI relevance teachers trained on the real pairs (test split)",
        "",
        f"Made by `{r['command']}` ({r['seconds']:,.0f} s), from `{r['folder']}`.",
        "",
        f"Exact against the rest on the test split ({pairs['test']} pairs: {counts('test')}). The "
        f"cross-encoder ({ce['base']}, top {ce['train_top_layers']} layers trained, {ce['epochs']} epochs, "
        f"seed {ce['seed']}, ESCI's four grades) is fine-tuned on the train split ({pairs['train']} pairs: "
        f"{counts('train')}); the stacks are fitted on the dev split ({pairs['dev']} pairs: {counts('dev')}) "
        "and their dev AUC is leave-one-out. Nothing is tuned on test. Intervals are 95% bootstrap over "
        f"pairs; the difference from {r['reference']} is paired (the same resamples for both), and a row "
        "beats BM25 only when that interval lies above zero.",
        "",
    ]
    rows = [
        {**x, "ci": _ci(x["auc_ci"]), "dci": _ci(x.get("difference_ci")), "verdict": x.get("vs_bm25", "-")}
        for x in r["rows"]
    ]
    lines += table(
        rows,
        [
            ("teacher", "teacher"),
            ("what", "how"),
            ("dev_auc", "dev AUC"),
            ("auc", "test AUC"),
            ("ci", "95% CI"),
            ("difference", f"minus {r['reference']}"),
            ("dci", "95% CI"),
            ("verdict", "vs BM25"),
        ],
    )
    if seeds := ce.get("seeds"):
        lines += [
            "The cross-encoder alone (raw), the same recipe fine-tuned with other seeds: "
            + "; ".join(
                f"seed {x['seed']}: dev {fmt(x['dev_auc'])}, test {fmt(x['auc'])} ({_ci(x['auc_ci'])})"
                for x in seeds
            )
            + ".",
            "",
        ]
    if r["teacher"] is not None:
        by_name = {x["teacher"]: x for x in r["rows"]}
        t, ref = by_name[r["teacher"]], by_name[r["reference"]]
        answer = "yes" if r["teacher_beats_bm25"] else "no" if t["vs_bm25"] == "loses" else "not shown"
        lines += [
            f"Does the teacher ({r['teacher']}) beat {r['reference']} on test? {answer}: AUC "
            f"{fmt(t['auc'])} against {fmt(ref['auc'])}, paired difference {fmt(t['difference'])} (95% CI "
            f"{_ci(t['difference_ci'])}).",
            "",
        ]
    lines += [
        "No student is measured here: a served student distils the teacher of its own bundle, and no bundle "
        "distils this teacher yet, so a retention figure against it would compare a student with a teacher "
        "it never learned from.",
        "",
    ]
    return lines


def wands_ceiling_section(r: dict[str, Any]) -> list[str]:
    def weights(w: dict[str, float]) -> str:
        return ", ".join(f"{name} {v:g}" for name, v in w.items() if v)

    def rows(part: dict[str, Any], split: str, chosen: str) -> list[dict[str, str]]:
        out = [
            {"what": x["signal"], "on": _with_ci(x[split]), "test": _with_ci(x["test"])}
            for x in part["alone"]
        ]
        for key, what in (("chosen", chosen), ("ceiling_on_test", "ceiling: stack chosen on test")):
            s = part[key]
            out.append(
                {
                    "what": f"{what} ({weights(s['weights'])})",
                    "on": _with_ci(s[split]),
                    "test": _with_ci(s["test"]),
                }
            )
        return out

    refit = r["refit"]
    pooled = " and ".join(refit["splits"])
    lines = [
        "## WANDS intent: how far the available teachers go (dev and test splits)",
        "",
        f"Made by `{r['command']}` ({r['seconds']:,.0f} s). Every signal the teachers here give for a real "
        f"query's class ({r['labels']} labels; {r['queries']['dev']} dev and {r['queries']['test']} test "
        "queries of a known class): MiniLM and mpnet cosine to the label prototypes (zero-shot) and to "
        "prototypes moved toward the labelled training queries (few-shot), and BM25 against the label "
        f"names. Then {r['stacks_tried']:,} linear stacks of them (each z-scored per query, weights 0, 0.5, "
        "1 or 2): the one chosen on dev, and the best on the test split itself, which has seen the answers "
        f"and is a ceiling for every such stack, not a model. Target: test top-1 >= {r['target']}. "
        "Intervals are 95% bootstrap over queries.",
        "",
    ]
    lines += table(
        rows(r, "dev", "stack chosen on dev"),
        [("what", "signal"), ("on", "dev top-1"), ("test", "test top-1")],
    )
    lines += [
        "",
        "Refitted on every labelled query that is not test: the few-shot prototypes built from the "
        f"{refit['queries']} labelled {pooled} queries, as a teacher trained on all of them would be, and "
        "the stack's weights chosen on those queries leave-one-out (each scored against prototypes built "
        "without it), so no choice sees the test split. The ceiling row again has seen the answers.",
        "",
    ]
    lines += table(
        rows(refit, "pool", f"stack chosen on {pooled}, leave-one-out"),
        [("what", "signal"), ("on", f"{pooled} top-1, leave-one-out"), ("test", "test top-1")],
    )
    return lines
