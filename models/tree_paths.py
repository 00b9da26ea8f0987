"""A LightGBM booster's trees as flat numpy arrays: decisions, and TreeSHAP per tree.

:class:`SplitNodes` decides, for many leads at once, which way each lead goes at every
split node of every tree, by LightGBM's own rules (``Tree::NumericalDecision`` and
``CategoricalDecision`` in LightGBM 4): NaN counts as 0.0 unless the node's missing
type is NaN; a missing value (NaN, or zero under missing type Zero) takes the node's
default side; a categorical value goes left when its integer part is a non-negative
code in the node's set, so NaN and negative codes go right.

:class:`LeafTables` turns those decisions into one tree's exact SHAP contributions.
TreeSHAP's contribution of a leaf depends on a lead only through which of the leaf's
path features the lead "agrees" with (it passes every test on that feature along the
path): for path features ``U`` (``u`` of them), cover fractions ``z`` and agreements
``o``, feature ``i`` receives
``v * (o_i - z_i) * sum_{S <= U-i, o_S = 1} |S|!(u-|S|-1)!/u! * prod_{j in U-i-S} z_j``
(Lundberg et al., *Consistent individualized feature attribution for tree
ensembles*; the same quantity LightGBM's recursive ``TreeSHAP`` computes). With
``o`` binary there are only ``2^u`` cases per leaf, so every case is computed once,
when the model loads, and a lead's contribution is a table look-up per leaf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

#: LightGBM's kZeroThreshold: |x| at or below it is zero for missing type "Zero".
_ZERO = 1e-35
#: A tree's decisions are one 64-bit pattern: trees with more splits are not handled.
MAX_SPLITS = 64
#: Leaves whose path tests more distinct features get no table (2^u cases each).
MAX_PATH_FEATURES = 12


@dataclass(frozen=True)
class SplitNodes:
    """Every split node of a booster, flat, in pre-order, tree after tree."""

    feature: np.ndarray  # (N,) feature index
    numeric: np.ndarray  # indices of the numeric nodes
    numeric_feature: np.ndarray  # their features
    threshold: np.ndarray  # (len(numeric),)
    nan_left: np.ndarray  # (len(numeric),) where NaN goes
    zero_missing: np.ndarray  # indices into `numeric` of nodes with missing type Zero
    zero_left: np.ndarray  # (len(zero_missing),) where a missing zero goes
    categorical: np.ndarray  # indices of the categorical nodes
    categorical_feature: np.ndarray  # their features
    category_left: np.ndarray  # flat table: code goes left, per categorical node
    category_base: np.ndarray  # (len(categorical),) row start of each node in it
    width: int  # codes 0..width-1 are in the table; others go right
    tree_start: np.ndarray  # (T,) first node of each tree that has a split
    split_trees: np.ndarray  # (T,) the booster's index of each such tree
    weight: np.ndarray  # (N,) uint64 1 << position of the node in its tree

    @classmethod
    def of(cls, trees: list[dict[str, Any]]) -> SplitNodes | None:
        """From ``Booster.dump_model()["tree_info"]``; None when a tree has too many splits."""
        nodes: list[dict[str, Any]] = []
        starts: list[int] = []
        with_splits: list[int] = []
        for t, info in enumerate(trees):
            mine = list(_preorder(info["tree_structure"]))
            if len(mine) > MAX_SPLITS:
                return None
            if mine:
                starts.append(len(nodes))
                with_splits.append(t)
                nodes += mine
        tree_start = np.asarray(starts, dtype=np.int64)
        position = np.arange(len(nodes)) - np.repeat(tree_start, np.diff([*starts, len(nodes)]))
        is_cat = np.array([n["decision_type"] == "==" for n in nodes], dtype=bool)
        numeric = np.flatnonzero(~is_cat)
        categorical = np.flatnonzero(is_cat)
        threshold = np.array([float(nodes[i]["threshold"]) for i in numeric])
        missing = [nodes[i]["missing_type"] for i in numeric]
        default_left = np.array([bool(nodes[i]["default_left"]) for i in numeric], dtype=bool)
        # NaN is the default side under missing type NaN, else it is scored as 0.0.
        nan_is_zero = np.array([m != "NaN" for m in missing], dtype=bool)
        zero_missing = np.flatnonzero([m == "Zero" for m in missing])
        nan_left = np.where(nan_is_zero, 0.0 <= threshold, default_left)
        nan_left[zero_missing] = default_left[zero_missing]
        sets = [[int(c) for c in str(nodes[i]["threshold"]).split("||")] for i in categorical]
        width = max((max(s) for s in sets), default=0) + 1
        table = np.zeros((len(sets), width), dtype=bool)
        for row, codes in enumerate(sets):
            table[row, codes] = True
        feature = np.array([n["split_feature"] for n in nodes], dtype=np.int64)
        return cls(
            feature=feature,
            numeric=numeric,
            numeric_feature=feature[numeric],
            threshold=threshold,
            nan_left=nan_left,
            zero_missing=zero_missing,
            zero_left=default_left[zero_missing],
            categorical=categorical,
            categorical_feature=feature[categorical],
            category_left=table.ravel(),
            category_base=np.arange(len(sets), dtype=np.int64) * width,
            width=width,
            tree_start=tree_start,
            split_trees=np.asarray(with_splits, dtype=np.int64),
            weight=np.left_shift(np.uint64(1), position.astype(np.uint64)),
        )

    @property
    def n_trees(self) -> int:
        return len(self.tree_start)

    def goes_left(self, X: np.ndarray) -> np.ndarray:
        """(n, N) bool: whether each lead goes left at each split node."""
        left = np.empty((len(X), len(self.feature)), dtype=bool)
        values = X[:, self.numeric_feature]
        numeric_left = values <= self.threshold  # NaN compares False
        nan = np.isnan(X)
        if nan.any():
            numeric_left |= nan[:, self.numeric_feature] & self.nan_left
        if self.zero_missing.size:
            zero = values[:, self.zero_missing]
            is_zero = np.isnan(zero) | (np.abs(zero) <= _ZERO)
            column = numeric_left[:, self.zero_missing]
            numeric_left[:, self.zero_missing] = np.where(is_zero, self.zero_left, column)
        left[:, self.numeric] = numeric_left
        if self.categorical.size:
            raw = X[:, self.categorical_feature]
            inside = (raw >= 0) & (raw < self.width)  # NaN compares False: right
            codes = np.where(inside, raw, 0).astype(np.int64)  # truncation, as C++ casts
            left[:, self.categorical] = inside & self.category_left[codes + self.category_base]
        return left

    def patterns(self, left: np.ndarray) -> np.ndarray:
        """(n, T) uint64: each tree's decisions, one bit per split node."""
        return np.add.reduceat(left * self.weight, self.tree_start, axis=1)


def _preorder(node: dict[str, Any]) -> Any:
    if "split_index" in node:
        yield node
        yield from _preorder(node["left_child"])
        yield from _preorder(node["right_child"])


@dataclass(frozen=True)
class LeafTables:
    """Every leaf's TreeSHAP contributions for each of its ``2^u`` agreement patterns.

    Flat arrays, tree after tree, leaf after leaf; an *element* is one (leaf, path
    feature) pair and a *check* one split node that element's agreement requires.
    """

    tree_elements: np.ndarray  # (T + 1,) element offsets per tree
    element_feature: np.ndarray  # (E,)
    element_bit: np.ndarray  # (E,) position of the feature in its leaf's pattern
    element_leaf: np.ndarray  # (E,) global leaf index
    element_checks: np.ndarray  # (E + 1,) check offsets per element
    check_node: np.ndarray  # (C,) split node
    check_left: np.ndarray  # (C,) the side the path takes there
    leaf_elements: np.ndarray  # (L,) first element of each leaf
    leaf_width: np.ndarray  # (L,) u
    leaf_table: np.ndarray  # (L,) offset of the leaf's (2^u, u) table in `values`
    values: np.ndarray

    @classmethod
    def of(cls, trees: list[dict[str, Any]], nodes: SplitNodes) -> LeafTables | None:
        """None when some leaf tests more than :data:`MAX_PATH_FEATURES` features."""
        leaves: list[tuple[float, list[int], list[float], list[list[tuple[int, bool]]]]] = []
        tree_leaves = [0]
        for t, first_node in zip(nodes.split_trees, nodes.tree_start, strict=True):
            found = _leaves(trees[int(t)]["tree_structure"], int(first_node))
            if any(len(f) > MAX_PATH_FEATURES for _, f, _, _ in found):
                return None
            leaves += found
            tree_leaves.append(len(leaves))
        return cls._build(leaves, tree_leaves)

    @classmethod
    def _build(
        cls,
        leaves: list[tuple[float, list[int], list[float], list[list[tuple[int, bool]]]]],
        tree_leaves: list[int],
    ) -> LeafTables:
        widths = np.array([len(f) for _, f, _, _ in leaves], dtype=np.int64)
        sizes = (2**widths) * widths
        leaf_table = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        values = np.empty(int(sizes.sum()))
        for u in np.unique(widths):
            group = np.flatnonzero(widths == u)
            z = np.array([leaves[i][2] for i in group])
            v = np.array([leaves[i][0] for i in group])
            tables = _shapley_tables(v, z)  # (len(group), 2^u, u)
            for row, leaf in enumerate(group):
                values[leaf_table[leaf] : leaf_table[leaf] + sizes[leaf]] = tables[row].ravel()
        leaf_elements = np.concatenate(([0], np.cumsum(widths)[:-1])).astype(np.int64)
        element_feature = [f for _, feats, _, _ in leaves for f in feats]
        element_bit = [k for _, feats, _, _ in leaves for k in range(len(feats))]
        element_leaf = np.repeat(np.arange(len(leaves)), widths)
        checks = [c for _, _, _, per in leaves for c in per]
        counts = np.array([len(c) for c in checks], dtype=np.int64)
        flat = [pair for c in checks for pair in c]
        return cls(
            tree_elements=np.array(
                [*leaf_elements[tree_leaves[:-1]], len(element_feature)], dtype=np.int64
            ),
            element_feature=np.asarray(element_feature, dtype=np.int64),
            element_bit=np.asarray(element_bit, dtype=np.int64),
            element_leaf=element_leaf,
            element_checks=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
            check_node=np.array([n for n, _ in flat], dtype=np.int64),
            check_left=np.array([s for _, s in flat], dtype=bool),
            leaf_elements=leaf_elements,
            leaf_width=widths,
            leaf_table=leaf_table,
            values=values,
        )

    def contributions(
        self, left: np.ndarray, rows: np.ndarray, trees: np.ndarray, grouping: np.ndarray
    ) -> np.ndarray:
        """(len(rows), sources): tree ``trees[m]``'s contributions for lead ``rows[m]``.

        ``left`` is :meth:`SplitNodes.goes_left` of the leads; contributions are summed
        into the columns of ``grouping`` (features x sources).
        """
        elements, pair = _expand(self.tree_elements, trees)
        element_rows = rows[pair]
        checks, owner = _expand(self.element_checks, elements)
        agree = left[element_rows[owner], self.check_node[checks]] == self.check_left[checks]
        starts = np.concatenate(([0], np.cumsum(np.diff(self.element_checks)[elements])[:-1]))
        agreed = np.logical_and.reduceat(agree, starts) if len(agree) else agree
        leaf = self.element_leaf[elements]
        bits = agreed.astype(np.int64) << self.element_bit[elements]
        # Elements of one leaf are contiguous: a change of leaf starts a new pattern.
        new_leaf = np.flatnonzero(np.r_[True, (leaf[1:] != leaf[:-1]) | (pair[1:] != pair[:-1])])
        pattern = np.add.reduceat(bits, new_leaf) if len(bits) else bits
        element_pattern = np.repeat(pattern, np.diff(np.r_[new_leaf, len(leaf)]))
        at = (
            self.leaf_table[leaf]
            + element_pattern * self.leaf_width[leaf]
            + self.element_bit[elements]
        )
        contrib = self.values[at]
        sources = grouping.shape[1]
        source_of = np.argmax(grouping, axis=1)[self.element_feature[elements]]
        flat = np.bincount(
            pair * sources + source_of, weights=contrib, minlength=len(rows) * sources
        )
        return flat.reshape(len(rows), sources)


def _expand(offsets: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ranges ``offsets[w]:offsets[w+1]`` for w in ``which``, and their owner."""
    counts = offsets[which + 1] - offsets[which]
    owner = np.repeat(np.arange(len(which)), counts)
    first = np.repeat(offsets[which] - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return first + np.arange(int(counts.sum())), owner


def _leaves(
    root: dict[str, Any], first_node: int
) -> list[tuple[float, list[int], list[float], list[list[tuple[int, bool]]]]]:
    """Per leaf: value, path features (first-seen order), their cover fractions, checks.

    Node numbers are pre-order from ``first_node``, as :class:`SplitNodes` numbers them.
    """
    out: list[tuple[float, list[int], list[float], list[list[tuple[int, bool]]]]] = []
    counter = [first_node]

    def count(node: dict[str, Any]) -> float:
        return float(node["internal_count"] if "split_index" in node else node["leaf_count"])

    def walk(node: dict[str, Any], path: list[tuple[int, int, bool, float]]) -> None:
        if "split_index" not in node:
            features: list[int] = []
            zero: dict[int, float] = {}
            checks: dict[int, list[tuple[int, bool]]] = {}
            for node_id, feature, went_left, fraction in path:
                if feature not in zero:
                    features.append(feature)
                    zero[feature] = 1.0
                    checks[feature] = []
                zero[feature] *= fraction
                checks[feature].append((node_id, went_left))
            out.append(
                (
                    float(node["leaf_value"]),
                    features,
                    [zero[f] for f in features],
                    [checks[f] for f in features],
                )
            )
            return
        node_id = counter[0]
        counter[0] += 1
        feature = int(node["split_feature"])
        total = count(node)
        walk(
            node["left_child"], [*path, (node_id, feature, True, count(node["left_child"]) / total)]
        )
        walk(
            node["right_child"],
            [*path, (node_id, feature, False, count(node["right_child"]) / total)],
        )

    walk(root, [])
    return out


def _shapley_tables(v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(leaves, 2^u, u): each path feature's contribution for each agreement pattern.

    For feature k the Shapley sum over subsets of the other features is the product
    of the polynomials ``z_j + o_j t``; its coefficient of ``t^s`` weighs subsets of
    size s, whose Shapley weight is ``s! (u-s-1)! / u!``.
    """
    n, u = z.shape
    patterns = (np.arange(2**u)[:, None] >> np.arange(u)) & 1  # (2^u, u): o per feature
    o = patterns.astype(np.float64)
    weights = np.array(
        [math.factorial(s) * math.factorial(u - s - 1) / math.factorial(u) for s in range(u)]
    )
    out = np.empty((n, 2**u, u))
    for k in range(u):
        coef = np.zeros((n, 2**u, u))
        coef[:, :, 0] = 1.0
        for j in range(u):
            if j == k:
                continue
            shifted = np.zeros_like(coef)
            shifted[:, :, 1:] = coef[:, :, :-1] * o[None, :, j, None]
            coef = coef * z[:, None, j, None] + shifted
        total = coef @ weights  # (n, 2^u)
        out[:, :, k] = v[:, None] * (o[None, :, k] - z[:, k, None]) * total
    return out


def parse(booster: lgb.Booster) -> list[dict[str, Any]]:
    """The booster's trees as LightGBM dumps them (thresholds at full precision)."""
    trees: list[dict[str, Any]] = booster.dump_model()["tree_info"]
    return trees
