"""The same image under different classes in one archive (e.g. `cats/a.jpg` and `dogs/a.jpg` holding
the same bytes): found, reported, and resolved by an explicit choice, never by whichever comes last.

Found cheaply: entries are grouped by the CRC-32 and size the ZIP directory already records (no byte
read), and only entries that collide there, under different labels, are read and confirmed by
SHA-256. Resolved by the import's `conflicts` choice in a single-label dataset:
- `first`: every copy gets the labels of the first copy in archive order; the others are reported,
- `skip`: no copy is labeled by the import; all are reported.
In a multi-label dataset an image under several class folders is how such archives say "both", so its
copies get the union of their labels (counted as merged, not as conflicts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from core.errors import InvalidInput
from core.imports.safe_zip import SafeZip

CONFLICT_CHOICES = ("first", "skip")
"""How an import resolves the same bytes under different classes (single-label datasets)."""


@dataclass(frozen=True)
class LabelConflict:
    sha256: str
    entries: tuple[str, ...]  # the copies that carry labels, in archive order


def check_choice(choice: str) -> str:
    if choice not in CONFLICT_CHOICES:
        raise InvalidInput(f"conflicts must be one of {', '.join(CONFLICT_CHOICES)}, not {choice!r}")
    return choice


def find_label_conflicts(archive: SafeZip, labels: Mapping[str, frozenset[Hashable]]) -> list[LabelConflict]:
    """Groups of entries (of those in `labels`, which maps entry → its non-empty label set) with the
    same bytes and at least two different label sets, in archive order."""
    by_name = {entry.name: entry for entry in archive.entries}
    order = {name: index for index, name in enumerate(by_name)}
    by_directory: dict[tuple[int, int], list[str]] = {}
    for name in labels:
        entry = by_name[name]
        by_directory.setdefault((entry.info.CRC, entry.size), []).append(name)
    conflicts = []
    for names in by_directory.values():
        if len({labels[name] for name in names}) < 2:
            continue  # one entry, or the same labels: nothing to decide
        by_hash: dict[str, list[str]] = {}
        for name in names:
            try:
                digest = hashlib.sha256(archive.read(by_name[name])).hexdigest()
            except InvalidInput:
                continue  # unreadable: the import reports it as a per-file error
            by_hash.setdefault(digest, []).append(name)
        conflicts += [LabelConflict(digest, tuple(sorted(copies, key=order.__getitem__)))
                      for digest, copies in by_hash.items() if len({labels[name] for name in copies}) > 1]
    return sorted(conflicts, key=lambda conflict: order[conflict.entries[0]])


def resolved_labels(conflicts: list[LabelConflict], labels: Mapping[str, frozenset], *, choice: str,
                    multi_label: bool) -> dict[str, frozenset | None]:
    """The labels each copy in a conflict gets: the union (multi-label), the first copy's (`first`),
    or None, meaning not labeled by this import (`skip`)."""
    resolved: dict[str, frozenset | None] = {}
    for conflict in conflicts:
        if multi_label:
            kept = frozenset().union(*(labels[name] for name in conflict.entries))
        else:
            kept = labels[conflict.entries[0]] if check_choice(choice) == "first" else None
        resolved.update(dict.fromkeys(conflict.entries, kept))
    return resolved


def describe(conflict: LabelConflict, class_names: Mapping[str, tuple[str, ...]],
             labeled: tuple[str, ...] | None = None) -> dict:
    """One conflict for a preview or summary: its files, each file's classes (as in the archive) and,
    after an import, the classes the copies got (empty: not labeled)."""
    out = {"files": list(conflict.entries), "classes": [", ".join(class_names[name]) for name in conflict.entries]}
    if labeled is not None:
        out["labeled_as"] = ", ".join(labeled)
    return out
