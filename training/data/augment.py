"""The large unlabelled query set BERT2DNN needs (>= 10x the labelled set), made from label names and real
query text: what a shopper types for a category is its head noun, with modifiers, cut short, reordered."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

COLOURS = (
    "white",
    "black",
    "grey",
    "gray",
    "blue",
    "navy",
    "green",
    "sage",
    "red",
    "pink",
    "blush",
    "beige",
    "brown",
    "tan",
    "cream",
    "ivory",
    "gold",
    "silver",
    "brass",
    "yellow",
    "orange",
    "teal",
    "purple",
    "turquoise",
    "charcoal",
    "natural",
    "walnut",
    "espresso",
    "multicolor",
)
MATERIALS = (
    "wood",
    "wooden",
    "solid wood",
    "oak",
    "pine",
    "teak",
    "bamboo",
    "metal",
    "iron",
    "steel",
    "aluminum",
    "glass",
    "marble",
    "stone",
    "ceramic",
    "velvet",
    "linen",
    "cotton",
    "leather",
    "faux leather",
    "wool",
    "jute",
    "rattan",
    "wicker",
    "plastic",
    "acrylic",
    "concrete",
    "fabric",
    "microfiber",
    "boucle",
)
STYLES = (
    "modern",
    "mid century",
    "farmhouse",
    "rustic",
    "industrial",
    "vintage",
    "boho",
    "coastal",
    "traditional",
    "contemporary",
    "scandinavian",
    "minimalist",
    "glam",
    "shabby chic",
    "retro",
    "classic",
)
SIZES = (
    "small",
    "large",
    "oversized",
    "mini",
    "tall",
    "low",
    "wide",
    "narrow",
    "round",
    "square",
    "rectangular",
    "oval",
    "twin",
    "full",
    "queen",
    "king",
    "5x7",
    "8x10",
    "60 inch",
    "24 inch",
    "3 piece",
    "set of 2",
    "set of 4",
    "extra long",
)
ROOMS = (
    "living room",
    "bedroom",
    "kitchen",
    "bathroom",
    "dining room",
    "office",
    "nursery",
    "patio",
    "outdoor",
    "entryway",
    "hallway",
    "kids room",
    "garage",
    "balcony",
    "porch",
)
FEATURES = (
    "with storage",
    "with drawers",
    "with wheels",
    "adjustable",
    "folding",
    "waterproof",
    "washable",
    "cordless",
    "led",
    "dimmable",
    "non slip",
    "reversible",
    "stackable",
    "swivel",
    "reclining",
    "wall mounted",
    "heavy duty",
    "kids",
    "cheap",
    "clearance",
    "sale",
    "best",
    "for small spaces",
)
MODIFIERS = COLOURS + MATERIALS + STYLES + SIZES + FEATURES
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("&", " "))


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us")) and len(word) > 3:
        return word[:-1]
    return word


def _phrases(label: str, description: str) -> list[list[str]]:
    """Ways to name a label: its leaf (split on "/", "," and "and"), singular and plural, and its parent."""
    levels = [lvl.strip() for lvl in label.split(">") if lvl.strip()]
    leaf = levels[-1]
    out = []
    for part in re.split(r"/|,| and | & ", leaf):
        words = _words(part)
        if words:
            out.append(words)
            out.append([*words[:-1], _singular(words[-1])])
    if not out:
        out.append(_words(leaf) or ["item"])
    if len(levels) > 1 and _words(levels[-2]):
        out.append([*_words(levels[-2])[-1:], *out[0][-1:]])
    desc = [w for w in _words(description) if len(w) > 3][:12]
    if desc:
        out.append(desc[:3])
    return out


def _query(phrase: list[str], rng: random.Random) -> list[str]:
    roll = rng.random()
    words = list(phrase)
    if roll < 0.15:
        return words
    if roll < 0.3 and len(words) > 1:
        # A shopper often types only part of the name ("rug" for "area rugs").
        start = rng.randrange(len(words))
        return words[start : start + rng.randint(1, len(words) - start)]
    out = list(words)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        mod = rng.choice(MODIFIERS).split()
        out = [*mod, *out] if rng.random() < 0.7 else [*out, *mod]
    if rng.random() < 0.2:
        out += ["for", *rng.choice(ROOMS).split()]
    return out


def _noise(words: list[str], rng: random.Random) -> list[str]:
    """Typing noise: a word cut short, a swapped pair of letters, or two words swapped."""
    roll = rng.random()
    if roll < 0.08 and len(words[-1]) > 4:
        return [*words[:-1], words[-1][: rng.randrange(3, len(words[-1]))]]
    if roll < 0.14:
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 4:
            j = rng.randrange(1, len(w) - 2)
            words = [*words[:i], w[:j] + w[j + 1] + w[j] + w[j + 2 :], *words[i + 1 :]]
    elif roll < 0.2 and len(words) > 1:
        i = rng.randrange(len(words) - 1)
        words = [*words[:i], words[i + 1], words[i], *words[i + 2 :]]
    return words


def generate_label_queries(
    labels: Sequence[str], descriptions: Mapping[str, str], n: int, seed: int
) -> list[tuple[str, str]]:
    """`n` (query, source label) pairs, round-robin over labels, so every label is equally represented."""
    rng = random.Random(seed)
    phrases = {label: _phrases(label, descriptions.get(label, "")) for label in labels}
    out = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = _noise(_query(rng.choice(phrases[label]), rng), rng)
        out.append((" ".join(words), label))
    return out


def augment_queries(queries: Sequence[str], n: int, seed: int) -> list[str]:
    """`n` variants of real queries: a word dropped, words swapped, a modifier added, the last word cut."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = _words(queries[i % len(queries)]) or ["item"]
        roll = rng.random()
        if roll < 0.25 and len(words) > 1:
            words.pop(rng.randrange(len(words)))
        elif roll < 0.6:
            mod = rng.choice(MODIFIERS).split()
            words = [*mod, *words] if rng.random() < 0.6 else [*words, *mod]
        elif roll < 0.8 and len(words) > 1:
            i_ = rng.randrange(len(words) - 1)
            words[i_], words[i_ + 1] = words[i_ + 1], words[i_]
        words = _noise(words, rng)
        out.append(" ".join(words))
    return out


def vocabulary_queries(
    vocabulary: Sequence[str], labels: Sequence[str], descriptions: Mapping[str, str], n: int, seed: int
) -> list[str]:
    """Unlabelled queries that carry the teacher's knowledge of words no catalogue or query log here
    holds: a vocabulary word alone ("driftwood"), or in front of a label's name ("driftwood mirror"). The
    teacher labels them; the student, which only knows the words it was trained on, learns them."""
    rng = random.Random(seed)
    words = [w for w in vocabulary if w.isalpha() and len(w) >= 3]
    phrases = [p for label in labels for p in _phrases(label, descriptions.get(label, ""))]
    out = []
    for i in range(n):
        word = words[i % len(words)] if i < len(words) else rng.choice(words)
        out.append(word if rng.random() < 0.4 else " ".join([word, *rng.choice(phrases)]))
    return out


def word_runs(words: Sequence[str], n: int, seed: int) -> list[str]:
    """Random runs of two to four whole words ("lacoste tennis", "usb charger cable white"): text about
    anything, so that a student also learns where the teacher puts words and word pairs that no catalogue
    here holds, and queries far from the catalogue."""
    rng = random.Random(seed)
    return [" ".join(rng.sample(words, rng.choice((2, 2, 3, 4)))) for _ in range(n)]
