"""The stacked relevance teacher: the fine-tuned cross-encoder's grade log-probabilities, the bi-encoders'
(query, title) cosines (MiniLM, and mpnet when the preset's teachers include it) and the share of the query's
words the title holds, combined by a multinomial logistic regression into one distribution over the data's
grades.

The word share is the lexical signal the neural teachers underweigh: on the 159 real ESCI pairs (Exact
against the rest) it alone ranks better than the stack of the cross-encoder and MiniLM did, and than BM25,
while the cross-encoder, tuned on synthetic pairs, falls below BM25 there. Stacked, the linear model gives
it the weight the dev pairs support.

The stacker is fitted on pairs the cross-encoder never trained on (train_relevance's dev split): on its own
training pairs the cross-encoder is overconfident, and a stacker fitted there would learn to trust it
blindly. A linear model on a handful of features is enough to weigh the teachers and recalibrate them; it
also cannot memorise the few hundred dev lists it sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from server.runtime.lexical import tokenize
from training.presets import Preset

CROSS_ENCODER = "cross_encoder"
"""The cross-encoder's key among a pair set's teacher parts (the bi-encoders are keyed by teacher name)."""
WORD_MATCH = "word_match"
"""The word share's key among a pair set's teacher parts (`word_match`)."""

RELEVANCE_TEACHERS = ("stacked", "cross_encoder")
"""Preset.methods.relevance_teacher: what the relevance students distil."""


class Encoder(Protocol):
    """A sentence encoder giving L2-normalised rows (training.teachers.SentenceTeacher)."""

    def encode(self, texts: list[str], batch_size: int = ..., desc: str = ...) -> np.ndarray: ...


def stack_encoders(preset: Preset) -> tuple[str, ...]:
    """The bi-encoders stacked with the cross-encoder: MiniLM always (the cross-encoder's own base, always
    installed), mpnet only when the preset's teachers include it (a 110M-parameter model to run)."""
    return ("minilm", *(("mpnet",) if "mpnet" in preset.methods.teachers else ()))


def pair_cosines(
    encoder: Encoder, queries: Sequence[str], titles: Sequence[str], desc: str = ""
) -> np.ndarray:
    """Cosine of each (query, title) pair; every distinct text is encoded once (queries repeat per list)."""
    texts = list(dict.fromkeys([*queries, *titles]))
    vecs = encoder.encode(texts, desc=desc or "bi-encoder cosines")
    row = {t: i for i, t in enumerate(texts)}
    q = vecs[[row[t] for t in queries]]
    t = vecs[[row[t] for t in titles]]
    return (q * t).sum(1).astype(np.float32)


def word_match(queries: Sequence[str], titles: Sequence[str]) -> np.ndarray:
    """Per (query, title) pair, the share of the query's distinct words that the title holds, words as
    Search's BM25 index reads them (lower-cased, plural-stemmed: server/runtime/lexical.py); 0 for a query
    without words."""
    out = np.zeros(len(titles), dtype=np.float32)
    for i, (query, title) in enumerate(zip(queries, titles, strict=True)):
        words = set(tokenize(query))
        if words:
            out[i] = len(words & set(tokenize(title))) / len(words)
    return out


def stack_features(parts: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The stacker's input: the cross-encoder's log-probabilities (one column per grade; logs, because a
    softmax's logits are what a linear model can reweigh), one column per bi-encoder cosine and the word
    share."""
    cols = []
    for name in names:
        p = parts[name]
        cols.append(np.log(np.clip(p, 1e-6, 1.0)) if name == CROSS_ENCODER else p[:, None])
    return np.concatenate(cols, 1).astype(np.float32)


@dataclass
class GradeStacker:
    """Multinomial logistic regression over standardised features: softmax(((x - mean) / scale) W + b)."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, grades: np.ndarray, num_grades: int, l2: float = 1e-3) -> GradeStacker:
        """Full-batch L-BFGS on the cross-entropy (convex: the same answer whatever the start) with a small L2
        penalty on the weights, which keeps them finite when the features separate the grades."""
        mean = x.mean(0)
        scale = np.where(x.std(0) > 1e-6, x.std(0), 1.0)
        z = torch.from_numpy(((x - mean) / scale).astype(np.float32))
        y = torch.from_numpy(np.asarray(grades, dtype=np.int64))
        w = torch.zeros(x.shape[1], num_grades, requires_grad=True)
        # Start from the grades' shares (smoothed: a grade dev lacks still gets a little mass).
        prior = np.bincount(grades, minlength=num_grades) + 1.0
        b = torch.tensor(np.log(prior / prior.sum()), dtype=torch.float32, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(z @ w + b, y) + l2 * (w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return cls(mean, scale, w.detach().numpy(), b.detach().numpy())

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = ((x - self.mean) / self.scale) @ self.weight + self.bias
        e = np.exp(logits - logits.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)


@dataclass
class CrossEncoderScorer:
    """The fine-tuned cross-encoder (a FineTuneResult) as a picklable (queries, titles) -> probabilities."""

    result: Any

    def __call__(self, queries: list[str], titles: list[str]) -> np.ndarray:
        from training.finetune import cross_encoder_probabilities

        return cross_encoder_probabilities(self.result.model, self.result.tokenizer, queries, titles)


@dataclass
class StackedTeacher:
    """The cross-encoder (queries, titles -> grade probabilities), the bi-encoders by name, the word share
    when `words` is set, and the stacker over them; `names` orders the stacker's features."""

    cross_encoder: Callable[[list[str], list[str]], np.ndarray]
    encoders: dict[str, Encoder | None]
    """None: loaded by name on first use (training.teachers.teacher_dir)."""
    stacker: GradeStacker | None = None
    words: bool = False
    """Stack the word share (`word_match`) too. False in stacks pickled before it (their stacker has no
    column for it), so a kept stage cache still combines as it was fitted."""

    @property
    def names(self) -> tuple[str, ...]:
        return (CROSS_ENCODER, *self.encoders, *((WORD_MATCH,) if self.words else ()))

    def __getstate__(self) -> dict[str, Any]:
        # The stage cache pickles the result: keep the bi-encoders' names, not 100M-parameter copies of
        # models that load from disk anyway.
        return {**self.__dict__, "encoders": dict.fromkeys(self.encoders)}

    def encoder(self, name: str) -> Encoder:
        enc = self.encoders[name]
        if enc is None:
            from training.teachers import SentenceTeacher, teacher_dir

            enc = self.encoders[name] = SentenceTeacher(teacher_dir(name))
        return enc

    def parts(
        self, queries: list[str], titles: list[str], cross_encoder_probs: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Each teacher's answer per pair: grade probabilities from the cross-encoder (pass them when already
        computed), a cosine from each bi-encoder, and the word share when stacked."""
        ce = self.cross_encoder(queries, titles) if cross_encoder_probs is None else cross_encoder_probs
        out = {CROSS_ENCODER: ce}
        for name in self.encoders:
            out[name] = pair_cosines(self.encoder(name), queries, titles, f"{name}: pair cosines")
        if self.words:
            out[WORD_MATCH] = word_match(queries, titles)
        return out

    def fit(self, parts: dict[str, np.ndarray], grades: np.ndarray, num_grades: int) -> StackedTeacher:
        """Fit the stacker on held-out pairs' parts and grades (the dev split, never the cross-encoder's)."""
        self.stacker = GradeStacker.fit(stack_features(parts, self.names), grades, num_grades)
        return self

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        if self.stacker is None:
            raise RuntimeError("StackedTeacher.combine before fit")
        return self.stacker.probabilities(stack_features(parts, self.names))

    def probabilities(self, queries: list[str], titles: list[str]) -> np.ndarray:
        return self.combine(self.parts(queries, titles))


def alone_and_stacked(names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The teacher subsets the report measures: each teacher alone, the bi-encoders together (when there
    are two) and everything stacked."""
    bi = tuple(n for n in names if n != CROSS_ENCODER)
    out = {n: (n,) for n in names}
    if len(bi) > 1:
        out["+".join(bi)] = bi
    out["stacked"] = tuple(names)
    return out
