"""River Hoeffding trees and adaptive random forests compiled to ONNX graphs.

A tree's path is an ``ai.onnx.ml`` ``TreeEnsembleRegressor`` whose "prediction" is the number of
the leaf each row reaches (one output per tree). What a leaf answers is then gathered from
per-leaf tables: its class distribution (majority class), or a Gaussian naive Bayes over the
features (River's ``nb`` and ``nba`` leaves, each leaf's choice between the two taken as it
stands when the model is compiled). A forest adds its trees' answers weighted by each tree's
metric, as ``ARFClassifier`` votes, and normalises. A missing feature (NaN) follows the branch
River takes, the most travelled one, and adds nothing to naive Bayes. The graph computes in
double precision, so split decisions are River's exactly.

Compiled: ``HoeffdingTreeClassifier`` and ``ARFClassifier`` over numeric binary splits, with
majority-class, naive Bayes or adaptive naive Bayes leaves. Anything else raises
``NotCompilable`` with the reason (adaptive trees' alternate subtrees, regression trees).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from services.core.onnx_compile import NotCompilable

#: The per-leaf tables gathered by leaf number.
_TABLES = (
    "mc", "use_nb", "has_stats", "log_prior", "mu", "neg_half_inv_var", "log_norm", "valid",
)  # fmt: skip
ML_OPSET = 3
OPSET = 17
_HALF_LOG_TAU = 0.5 * math.log(math.tau)
#: The log-prior of a class a leaf never saw: it gets no vote (its probability is 0).
_ABSENT = -1e300


@dataclass
class _Leaves:
    """Per-leaf tables, leaves numbered across all trees."""

    classes: list[Any]
    names: list[str]
    mc: list[list[float]] = field(default_factory=list)
    use_nb: list[float] = field(default_factory=list)
    has_stats: list[float] = field(default_factory=list)
    log_prior: list[list[float]] = field(default_factory=list)
    mu: list[list[list[float]]] = field(default_factory=list)
    neg_half_inv_var: list[list[list[float]]] = field(default_factory=list)
    log_norm: list[list[list[float]]] = field(default_factory=list)
    valid: list[list[list[float]]] = field(default_factory=list)

    def add(self, leaf: Any, tree: Any) -> int:
        """Tabulate one leaf; its number."""
        kind = {type_.__name__ for type_ in type(leaf).__mro__}
        if "LeafNaiveBayesAdaptive" in kind:
            nb = leaf.is_active() and leaf._nb_correct_weight >= leaf._mc_correct_weight
        elif "LeafNaiveBayes" in kind:
            nb = leaf.is_active() and leaf.total_weight >= tree.nb_threshold
        elif "LeafMajorityClass" in kind:
            nb = False
        else:
            raise NotCompilable(f"leaf {type(leaf).__name__} is not compiled")
        stats: dict[Any, float] = dict(leaf.stats or {})
        total = sum(stats.values())
        width, depth = len(self.classes), len(self.names)
        self.mc.append([stats.get(c, 0.0) / total if total else 0.0 for c in self.classes])
        self.has_stats.append(1.0 if stats and total != 0 else 0.0)
        self.use_nb.append(1.0 if nb else 0.0)
        prior, mu, inv, norm, valid = [], [], [], [], []
        splitters = leaf.splitters or {}
        for c in self.classes:
            weight = stats.get(c)
            prior.append(
                _ABSENT if weight is None else math.log(weight / total) if weight > 0 else 0.0
            )
            row_mu, row_inv = [0.0] * depth, [0.0] * depth
            row_norm, row_valid = [0.0] * depth, [0.0] * depth
            if weight is not None and weight > 0:
                for j, name in enumerate(self.names):
                    gaussian = _gaussian(splitters.get(name), c)
                    if gaussian is not None:
                        mean, variance = gaussian
                        row_mu[j], row_valid[j] = mean, 1.0
                        row_inv[j] = -0.5 / variance
                        row_norm[j] = _HALF_LOG_TAU + 0.5 * math.log(variance)
            mu.append(row_mu)
            inv.append(row_inv)
            norm.append(row_norm)
            valid.append(row_valid)
        assert len(prior) == width
        self.log_prior.append(prior)
        self.mu.append(mu)
        self.neg_half_inv_var.append(inv)
        self.log_norm.append(norm)
        self.valid.append(valid)
        return len(self.mc) - 1


def _gaussian(splitter: Any, target: Any) -> tuple[float, float] | None:
    """(mean, variance) of a feature for a class at a leaf, where River's log-pdf is finite."""
    if splitter is None:
        return None
    if type(splitter).__name__ != "GaussianSplitter":
        raise NotCompilable(f"splitter {type(splitter).__name__} is not compiled")
    estimator = splitter._att_dist_per_class.get(target)
    if estimator is None:
        return None
    var = estimator._var
    n = var.mean.n
    if n <= var.ddof:
        return None
    variance = var._S / (n - var.ddof)
    if variance <= 0.0:
        return None
    return float(var.mean._mean), float(variance)


@dataclass
class _Paths:
    """The ``TreeEnsembleRegressor`` attributes: every tree's splits, its leaves' numbers."""

    tree_ids: list[int] = field(default_factory=list)
    node_ids: list[int] = field(default_factory=list)
    feature_ids: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    target_tree: list[int] = field(default_factory=list)
    target_node: list[int] = field(default_factory=list)
    target_id: list[int] = field(default_factory=list)
    target_weight: list[float] = field(default_factory=list)

    def add_tree(self, tree_id: int, root: Any, tree: Any, leaves: _Leaves) -> None:
        counter = iter(range(1_000_000))
        position = {name: j for j, name in enumerate(leaves.names)}

        def visit(node: Any) -> int:
            number = next(counter)
            self.tree_ids.append(tree_id)
            self.node_ids.append(number)
            index = len(self.modes)
            self.modes.append("LEAF")
            self.feature_ids.append(0)
            self.values.append(0.0)
            self.true_ids.append(0)
            self.false_ids.append(0)
            self.missing_true.append(0)
            if not hasattr(node, "children"):
                self.target_tree.append(tree_id)
                self.target_node.append(number)
                self.target_id.append(tree_id)
                self.target_weight.append(float(leaves.add(node, tree)))
                return number
            if type(node).__name__ != "NumericBinaryBranch":
                raise NotCompilable(f"branch {type(node).__name__} is not compiled")
            if node.feature not in position:
                raise NotCompilable(f"the tree splits on {node.feature!r}, not a served feature")
            left, right = node.children
            self.modes[index] = "BRANCH_LEQ"
            self.feature_ids[index] = position[node.feature]
            self.values[index] = float(node.threshold)
            self.missing_true[index] = 1 if node.most_common_path()[0] == 0 else 0
            self.true_ids[index] = visit(left)
            self.false_ids[index] = visit(right)
            return number

        visit(root)


def voting_trees(model: Any) -> list[tuple[Any, float]]:
    """A Hoeffding tree, or a forest's trees, each with its weight in the vote.

    As River votes: a tree's metric when above 0 and votes are weighted, else 1.
    """
    kind = type(model).__name__
    if kind in ("HoeffdingTreeClassifier", "BaseTreeClassifier"):
        return [(model, 1.0)]
    if kind != "ARFClassifier":
        raise NotCompilable(f"{kind} is not a tree model this compiles")
    trees = list(model)
    if not trees:
        raise NotCompilable("the forest has no trees yet")
    voting = []
    for i, tree in enumerate(trees):
        value = model._metrics[i].get()
        voting.append((tree, value if not model.disable_weighted_vote and value > 0.0 else 1.0))
    return voting


def compile_trees(model: Any, feature_names: Sequence[str]) -> tuple[bytes, list[Any]]:
    """The ONNX graph of a Hoeffding tree or adaptive random forest, and its classes' order."""
    members, weights = zip(*voting_trees(model), strict=True)
    classes = sorted({c for tree in members for c in tree.classes}, key=str)
    if not classes or any(tree._root is None for tree in members):
        raise NotCompilable("a tree has not learned anything yet")
    names = list(feature_names)
    leaves, paths = _Leaves(classes, names), _Paths()
    for t, tree in enumerate(members):
        paths.add_tree(t, tree._root, tree, leaves)
    return _graph(leaves, paths, len(members), list(weights)), classes


def _graph(leaves: _Leaves, paths: _Paths, trees: int, weights: list[float]) -> bytes:
    width, depth = len(leaves.classes), len(leaves.names)

    def table(name: str, values: Any, dtype: Any = np.float64) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(values, dtype), name)

    inits = [
        table("mc", leaves.mc),
        table("use_nb", np.array(leaves.use_nb).reshape(-1, 1)),
        table("has_stats", np.array(leaves.has_stats).reshape(-1, 1)),
        table("log_prior", leaves.log_prior),
        table("mu", leaves.mu),
        table("neg_half_inv_var", leaves.neg_half_inv_var),
        table("log_norm", leaves.log_norm),
        table("valid", leaves.valid),
        table("tree_weights", np.array(weights).reshape(1, trees, 1)),
        table("zero", [0.0]),
        table("row_shape", [-1, 1, 1, depth], np.int64),
    ]
    ml = "ai.onnx.ml"
    nodes = [
        helper.make_node(
            "TreeEnsembleRegressor",
            ["features"],
            ["leaf_float"],
            domain=ml,
            n_targets=trees,
            aggregate_function="SUM",
            post_transform="NONE",
            nodes_treeids=paths.tree_ids,
            nodes_nodeids=paths.node_ids,
            nodes_featureids=paths.feature_ids,
            nodes_values_as_tensor=numpy_helper.from_array(
                np.array(paths.values, np.float64), "nodes_values"
            ),
            nodes_modes=paths.modes,
            nodes_truenodeids=paths.true_ids,
            nodes_falsenodeids=paths.false_ids,
            nodes_missing_value_tracks_true=paths.missing_true,
            target_treeids=paths.target_tree,
            target_nodeids=paths.target_node,
            target_ids=paths.target_id,
            target_weights_as_tensor=numpy_helper.from_array(
                np.array(paths.target_weight, np.float64), "target_weights"
            ),
        ),
        helper.make_node("Cast", ["leaf_float"], ["leaf"], to=TensorProto.INT64),  # [N, T]
        *(helper.make_node("Gather", [name, "leaf"], [f"{name}_at"], axis=0) for name in _TABLES),
        helper.make_node("IsNaN", ["features"], ["missing"]),
        helper.make_node("Not", ["missing"], ["present_bool"]),
        helper.make_node("Cast", ["present_bool"], ["present_flat"], to=TensorProto.DOUBLE),
        helper.make_node("Where", ["missing", "zero", "features"], ["filled_flat"]),
        helper.make_node("Reshape", ["filled_flat", "row_shape"], ["filled"]),  # [N, 1, 1, F]
        helper.make_node("Reshape", ["present_flat", "row_shape"], ["present"]),
        helper.make_node("Sub", ["filled", "mu_at"], ["diff"]),  # [N, T, C, F]
        helper.make_node("Mul", ["diff", "diff"], ["squared"]),
        helper.make_node("Mul", ["squared", "neg_half_inv_var_at"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "log_norm_at"], ["log_pdf"]),
        helper.make_node("Mul", ["log_pdf", "valid_at"], ["counted"]),
        helper.make_node("Mul", ["counted", "present"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis_features"], ["log_likelihood"], keepdims=0),
        helper.make_node("Add", ["log_prior_at", "log_likelihood"], ["votes"]),  # [N, T, C]
        helper.make_node("Softmax", ["votes"], ["naive_bayes"], axis=2),
        helper.make_node("Cast", ["use_nb_at"], ["use_nb_bool"], to=TensorProto.BOOL),
        helper.make_node("Where", ["use_nb_bool", "naive_bayes", "mc_at"], ["answer"]),
        helper.make_node("Mul", ["answer", "has_stats_at"], ["leaf_answer"]),
        helper.make_node("Mul", ["leaf_answer", "tree_weights"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axis_trees"], ["votes_sum"], keepdims=0),
        helper.make_node("ReduceSum", ["votes_sum", "axis_classes"], ["total"], keepdims=1),
        helper.make_node("Greater", ["total", "zero"], ["positive"]),
        helper.make_node("Div", ["votes_sum", "total"], ["normalised"]),
        helper.make_node("Where", ["positive", "normalised", "votes_sum"], ["probabilities"]),
    ]
    inits += [
        table("axis_features", [3], np.int64),
        table("axis_trees", [1], np.int64),
        table("axis_classes", [1], np.int64),
    ]
    graph = helper.make_graph(
        nodes,
        "eddy-trees",
        [helper.make_tensor_value_info("features", TensorProto.DOUBLE, [None, depth])],
        [helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, width])],
        inits,
    )
    compiled = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(ml, ML_OPSET)],
    )
    compiled.ir_version = 8
    onnx.checker.check_model(compiled)
    return bytes(compiled.SerializeToString())
