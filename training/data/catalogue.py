"""Plain catalogue types shared by every loader."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    title: str
    category: str
    """Full leaf path, levels joined by " > "."""
    brand: str


@dataclass(frozen=True, slots=True)
class Catalogue:
    products: tuple[Product, ...]
    categories: tuple[str, ...]
    """Sorted unique leaf paths used by the products."""

    def by_category(self) -> dict[str, list[Product]]:
        out: dict[str, list[Product]] = {c: [] for c in self.categories}
        for p in self.products:
            out[p.category].append(p)
        return out
