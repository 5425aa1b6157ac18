"""Kuma's subsetutils and rules.BuildRules: groups of proxies as tag subsets (with negations), and the rules
built from `to` / `from` entries, one per group, most specific first (policies/_rules.py selects the entries)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from appliance.model.names import SERVICE_TAG
from appliance.policies._merge import Merge, merge

Tag = tuple[str, str, bool]          # (key, value, negated)
Subset = tuple[Tag, ...]             # a group of proxies; empty = everyone


@dataclass(frozen=True)
class Rule:
    subset: Subset
    conf: dict[str, Any]
    origins: tuple[str, ...]         # names of the policies whose items were merged into `conf`


def as_subset(ref: dict[str, Any]) -> Subset | None:
    kind = ref.get("kind")
    if kind == "Mesh":
        return ()
    if kind == "MeshSubset":
        return tuple((k, v, False) for k, v in sorted((ref.get("tags") or {}).items()))
    if kind == "MeshService":
        return ((SERVICE_TAG, ref.get("name") or "", False),)
    if kind == "MeshServiceSubset":
        tags = sorted((ref.get("tags") or {}).items())
        return ((SERVICE_TAG, ref.get("name") or "", False),) + tuple((k, v, False) for k, v in tags)
    return None


def _num_positive(subset: Subset) -> int:
    return sum(1 for _, _, negated in subset if not negated)


def contains_element(subset: Subset, element: dict[str, str]) -> bool:
    """Subset.ContainsElement: does the group include a proxy with these tags."""
    if not subset:
        return True
    if not element:
        return False
    overlap = False
    for key, value, negated in subset:
        if key in element:
            overlap = True
            if (element[key] == value) == negated:
                return False
        elif not negated:
            return False
    return overlap or _num_positive(subset) == 0


def _tag_is_subset(t1: Tag, t2: Tag) -> bool:
    if t1[0] != t2[0]:
        return False
    if t1[2] == t2[2]:
        return t1[1] == t2[1]
    if t1[2]:
        return t1[1] != t2[1]
    return False


def is_subset(superset: Subset, subset: Subset) -> bool:
    """Subset.IsSubset: is `subset` inside `superset` (the empty set contains everything)."""
    if not superset:
        return True
    for tag in superset:
        others = [t for t in subset if t[0] == tag[0]]
        if not others or not all(_tag_is_subset(tag, other) for other in others):
            return False
    return True


def _intersect(a: Subset, b: Subset) -> bool:
    if not a or not b:
        return True
    positive_b: dict[str, list[Tag]] = {}
    for tag in b:
        if not tag[2]:
            positive_b.setdefault(tag[0], []).append(tag)
    return all(other == tag for tag in a if not tag[2] for other in positive_b.get(tag[0], ()))


def _subset_combinations(tags: list[Tag]) -> Iterable[Subset]:
    """subsetutils.SubsetIter: per key, either one of its values or none of them, in Kuma's order."""
    dims: list[tuple[str, list[str]]] = []
    for key, value, _ in tags:
        for dim in dims:
            if dim[0] == key:
                if value not in dim[1]:
                    dim[1].append(value)
                break
        else:
            dims.append((key, [value]))
    idx = [0] * len(dims)

    def current() -> Subset:
        out: list[Tag] = []
        for (key, values), choice in zip(dims, idx):
            if choice == len(values):
                out.extend((key, v, True) for v in values)
            else:
                out.append((key, values[len(values) - choice - 1], False))
        return tuple(out)

    while True:
        for i, (_, values) in enumerate(dims):
            idx[i] += 1
            if idx[i] < len(values) + 1:
                yield current()
                break
            idx[i] = 0
        else:
            yield current()
            return


def _maximal_cliques(count: int, edges: set[tuple[int, int]]) -> list[list[int]]:
    """Bron–Kerbosch with pivoting; the caller sorts the result, so discovery order does not matter."""
    neighbours = {n: {m for m in range(count) if (n, m) in edges} for n in range(count)}
    cliques: list[list[int]] = []

    def expand(r: set[int], p: set[int], x: set[int]) -> None:
        if not p and not x:
            cliques.append(sorted(r))
            return
        pivot = max(p | x, key=lambda n: len(neighbours[n] & p))
        for node in sorted(p - neighbours[pivot]):
            expand(r | {node}, p & neighbours[node], x & neighbours[node])
            p = p - {node}
            x = x | {node}

    expand(set(), set(range(count)), set())
    return cliques


@dataclass(frozen=True)
class Item:
    subset: Subset
    conf: dict[str, Any]
    origin: str


def _create_rules(subset: Subset, items: Sequence[Item], merger: Merge) -> list[Rule]:
    relevant = [item for item in items if is_subset(item.subset, subset)]
    if not relevant:
        return []
    origins = tuple(dict.fromkeys(item.origin for item in relevant))
    return [Rule(subset, merger(item.conf for item in relevant), origins)]


def build_rules(items: Sequence[Item], with_negations: bool, merger: Merge = merge) -> list[Rule]:
    """rules.BuildRules: one rule per group of clients/destinations, most specific first."""
    if not items:
        return []
    keys = {tag[0] for item in items for tag in item.subset}
    rules: list[Rule] = []
    if not with_negations and len(keys) <= 1:
        seen: set[Subset] = set()
        for item in items:
            canonical = tuple(sorted(item.subset))
            if canonical not in seen:
                seen.add(canonical)
                rules += _create_rules(item.subset, items, merger)
        return sorted(rules, key=lambda r: -len(r.subset))
    subsets = [item.subset for item in items]
    edges = {(i, j) for i in range(len(subsets)) for j in range(len(subsets))
             if i != j and _intersect(subsets[i], subsets[j])}
    groups = _maximal_cliques(len(subsets), edges)
    # sortComponents: nodes ascending, groups by their joined ids as strings, descending.
    groups.sort(key=lambda g: ":".join(str(n) for n in g), reverse=True)
    for group in groups:
        tags = sorted({(k, v, False) for n in group for k, v, _ in subsets[n]})
        for subset in _subset_combinations(tags):
            rules += _create_rules(subset, items, merger)
    return sorted(rules, key=lambda r: -_num_positive(r.subset))
