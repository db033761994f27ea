from collections import Counter

from training.data.synthetic import TAXONOMY, generate_catalogue


def test_deterministic_and_seeded() -> None:
    assert generate_catalogue(500, seed=3) == generate_catalogue(500, seed=3)
    assert generate_catalogue(500, seed=3) != generate_catalogue(500, seed=4)


def test_taxonomy_shape() -> None:
    catalogue = generate_catalogue(5000)
    assert len(catalogue.categories) >= 30
    assert all(2 <= len(path.split(" > ")) <= 3 for path in catalogue.categories)
    counts = Counter(p.category for p in catalogue.products)
    assert set(counts) == set(catalogue.categories)
    assert min(counts.values()) >= 5000 // (4 * len(catalogue.categories))
    assert len(catalogue.products) == 5000
    assert len({p.id for p in catalogue.products}) == 5000


def test_titles_name_their_category() -> None:
    for p in generate_catalogue(2000).products:
        nouns = TAXONOMY[p.category][0]
        assert any(noun in p.title for noun in nouns), p
        assert p.title.startswith(p.brand)


def test_sibling_categories_share_words() -> None:
    """Ambiguity on purpose: some word of a head noun appears in two leaves of the same parent."""
    shared = 0
    for a in TAXONOMY:
        for b in TAXONOMY:
            if a < b and a.rsplit(" > ", 1)[0] == b.rsplit(" > ", 1)[0]:
                words_a = {w for noun in TAXONOMY[a][0] for w in noun.lower().split()}
                words_b = {w for noun in TAXONOMY[b][0] for w in noun.lower().split()}
                shared += bool(words_a & words_b)
    assert shared >= 3
