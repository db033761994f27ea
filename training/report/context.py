"""What the report's parts share: the settings, and a context holding the real query data and the
models one part hands to another."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.featurize import Featurizer, FeaturizerConfig
from training.data.dataset import TrainingData, load_training_data
from training.intent import IntentSets, build_intent_sets
from training.presets import PRESETS, Preset
from training.teachers import minilm_dir

DEFAULT_PARTS = ("intent", "catalogue", "layers", "latency")
"""What a bare `sift-train report` runs (unchanged since before the real-data parts)."""
BUNDLE_PARTS = ("real_queries", "served_relevance", "wands", "flipkart")
"""Parts that evaluate shipped bundles on the real data sets; run only when named with --parts."""
LEVER_PARTS = ("query_levers",)
"""Parts that train several students to compare one choice; run only when named with --parts."""
ESCI_PARTS = ("esci",)
"""Relevance teachers trained and stacked on the real ESCI pairs; run only when named with --parts."""
CEILING_PARTS = ("wands_ceiling",)
"""The teachers' own signals on WANDS, alone and stacked (a ceiling for the taxonomy's intent); run only when
named with --parts."""
PARTS = DEFAULT_PARTS + BUNDLE_PARTS + LEVER_PARTS + ESCI_PARTS + CEILING_PARTS


class ReportSettings(BaseSettings):
    model_config = SettingsConfigDict(
        cli_kebab_case=True, cli_prog_name="sift-train report", use_attribute_docstrings=True, extra="ignore"
    )

    data: Path = Path("../shared/data/wands-queries")
    """Taxonomy-only directory with real labelled queries in train/dev/test splits."""
    output: Path = Path("reports/wands")
    """Where README.md, results.json and the plots go."""
    preset: str = "default"
    """Sizes of the intent and layer runs (tiny for a quick look)."""
    catalogue_preset: str = "tiny"
    """Sizes of the catalogue part (two product teachers, several students; mpnet makes it slow)."""
    relevance_distill_pairs: int = 48000
    """Unlabelled pairs the catalogue part's text relevance student learns from (10x the tiny preset's
    4,800 labelled pairs; the tiny preset itself keeps fewer so that the tests stay fast)."""
    teachers: tuple[str, ...] = ("minilm", "mpnet")
    """Intent teachers compared and stacked."""
    parts: tuple[str, ...] = DEFAULT_PARTS
    """Which parts to (re)run: any of intent, catalogue, layers, latency (the default), and real_queries,
    served_relevance, wands, flipkart (shipped bundles on the real data sets), query_levers (the query
    student's layers, on real query text), esci (relevance teachers trained on the ESCI pairs, against
    BM25) and wands_ceiling (the teachers' own class signals on WANDS, alone and stacked)."""
    data_dir: Path = Path("../shared/data")
    """Folder of the real data sets (wands-queries, esci-judgments, esci-pairs, flipkart-names)."""
    default_bundle: Path = Path("bundles/default")
    """Bundle of the README's default command: its query side is measured against its teacher
    (real_queries)."""
    default_stages: Path = Path("bundles/.default.stages")
    """The default bundle's training stage cache, kept with `sift-train --keep-stages`: the relevance teacher
    its student distilled (served_relevance)."""
    wands_bundle: Path = Path("bundles/wands")
    """Taxonomy bundle trained on wands-queries: answers the WANDS test split (wands)."""
    flipkart_bundle: Path = Path("bundles/flipkart")
    """Bundle trained on flipkart-names/products_train.csv: answers the test split (flipkart)."""
    lever_layers: tuple[tuple[int, ...], ...] = ((0, 1, 2), (0, 2, 4), (0, 3, 5))
    """The choices of MiniLM layers the query_levers part distils a query student from, bottom first. The
    default: the bottom three (plain layer dropping), every other one, and first, middle and last."""
    seed: int = Field(0, ge=0)


class Context:
    def __init__(self, settings: ReportSettings) -> None:
        self.settings = settings
        self.preset: Preset = PRESETS[settings.preset]
        self.seed = settings.seed
        self.featurizer = Featurizer(
            minilm_dir() / "tokenizer.json", FeaturizerConfig(num_buckets=self.preset.num_buckets)
        )
        # Models the parts hand to each other (the latency part times the intent part's students).
        self.work = settings.output / ".work"
        self.work.mkdir(parents=True, exist_ok=True)
        self._real: tuple[TrainingData, IntentSets] | None = None

    def real(self) -> tuple[TrainingData, IntentSets]:
        if self._real is None:
            data = load_training_data(
                self.settings.data, self.preset.num_products, self.preset.heldout_fraction, self.seed
            )
            self._real = data, build_intent_sets(data, self.preset, self.featurizer, self.seed)
        return self._real
