"""Which column of a user's data file holds what. The loaders guess from common names; where a file names a
column differently, the user says which with a flag (--title-column and so on) instead of rewriting it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Columns:
    """Column names given by the user; None = guess from the loader's list of common names."""

    title: str | None = None
    """Product title (catalogue and pairs files)."""
    category: str | None = None
    """Category path of a product, or the class of a query in a taxonomy's queries.tsv."""
    id: str | None = None
    """Product id (catalogue and pairs files)."""
    query: str | None = None
    """Query text (pairs files, a taxonomy's queries.tsv)."""
    label: str | None = None
    """Relevance label of a (query, product) pair: E/S/C/I or Exact/Partial/Irrelevant."""

    def given(self) -> dict[str, str]:
        """The flags the user set, as {"--title-column": column}."""
        return {flag(f.name): value for f in fields(self) if (value := getattr(self, f.name)) is not None}

    def only(self, allowed: Collection[str], what: str) -> None:
        """Refuses flags that this kind of input does not read: a flag silently ignored would mislead."""
        extra = [name for name in self.given() if name not in {flag(a) for a in allowed}]
        if extra:
            raise ValueError(f"{', '.join(extra)}: not read from {what}")


GUESS = Columns()


def flag(name: str) -> str:
    return f"--{name}-column"


def keys(
    header: Collection[str], given: str | None, guesses: tuple[str, ...], name: str, path: Path
) -> tuple[str, ...]:
    """The columns to read a value from, first non-empty wins: the one the user named (which must exist),
    else those of `guesses` the file has (at least one)."""
    if given is not None:
        if given not in header:
            raise ValueError(f"{flag(name)} {given!r}: {path} has no such column; it has {_list(header)}")
        return (given,)
    present = tuple(k for k in guesses if k in header)
    if not present:
        raise ValueError(
            f"--data {path}: no {name} column (looked for {_list(guesses)}); name it with {flag(name)}. "
            f"The file has {_list(header)}"
        )
    return present


def optional_keys(
    header: Collection[str], given: str | None, guesses: tuple[str, ...], name: str, path: Path
) -> tuple[str, ...]:
    """As `keys`, but a file may lack the column when the user did not name it."""
    if given is None and not any(k in header for k in guesses):
        return ()
    return keys(header, given, guesses, name, path)


def first(row: Mapping[str, object], keys: tuple[str, ...]) -> str:
    """The first non-empty value of `keys` in the row, stripped; "" when none."""
    for key in keys:
        value = row.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return ""


def _list(names: Collection[str]) -> str:
    return ", ".join(names)
