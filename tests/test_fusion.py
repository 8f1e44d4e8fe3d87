"""Hybrid fusion's default (DBSF normalization, per-query adaptive alpha) computed as documented
in retrieval/fusion.py, the other normalizations it was measured against, and the retrieval
package's imports running one way."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sbert_cli.errors import InputError
from sbert_cli.retrieval.fusion import Fusion, adaptive_alpha, check_fusion, fuse, peakedness

PACKAGE = Path(__file__).resolve().parent.parent / "sbert_cli"


def dbsf(values: np.ndarray, x: float) -> float:
    """Qdrant's distribution-based score fusion scale, written out independently."""
    mean, sd = values.mean(), values.std()
    return float(np.clip((x - (mean - 3 * sd)) / (6 * sd), 0.0, 1.0))


def lists(dense_scores, keyword_ids, keyword_scores):
    dense = (np.arange(1, len(dense_scores) + 1), np.array(dense_scores, dtype=np.float32))
    return dense, (np.array(keyword_ids), np.array(keyword_scores, dtype=np.float32))


def test_the_default_is_dbsf_with_the_adaptive_alpha():
    assert Fusion() == check_fusion("hybrid", None, None)
    assert (Fusion().norm, Fusion().alpha, Fusion().describe()) == ("dbsf", None, "convex alpha=adaptive (dbsf)")
    assert check_fusion("hybrid", None, 0.3).alpha == 0.3  # a given --alpha fixes it


def test_a_rare_word_match_wins_when_dense_is_flat():
    # A lone word: cosines 0.40 down to 0.31, flat; BM25 matches one text (dense rank 8).
    dense_scores = [0.40 - 0.01 * i for i in range(10)]
    dense, keyword = lists(dense_scores, [8, -1], [5.0, -np.inf])
    d = (0.40 - np.mean(dense_scores)) / 0.40  # peakedness from the floor 0
    k = (5.0 - 5.0 / 10) / 5.0  # BM25 padded to 10 places with zeros
    alpha = d / (d + k)
    assert adaptive_alpha(dense[1], np.array([5.0]), 0.0) == pytest.approx(alpha)
    ranked = fuse(dense, keyword, k=3)
    padded = np.array([5.0] + [0.0] * 9)
    dense_values = np.array(dense_scores)
    assert ranked[0].id == 8
    assert ranked[0].score == pytest.approx(alpha * dbsf(dense_values, dense_scores[7]) + (1 - alpha) * 1.0, rel=1e-5)
    top = alpha * dbsf(dense_values, 0.40) + (1 - alpha) * dbsf(padded, 0.0)  # a text without the word
    assert (ranked[1].id, ranked[1].score) == (1, pytest.approx(top, rel=1e-5))
    # A fixed dense-heavy alpha lets the flat cosines outvote the only text with the word.
    assert fuse(dense, keyword, k=1, fusion=Fusion("convex", alpha=0.9))[0].id == 1


def test_a_paraphrase_wins_when_bm25_is_spread():
    # A sentence: one cosine stands out (id 1); BM25 spreads over ten texts sharing common words,
    # id 1 fifth among them.
    dense_scores = [0.9] + [0.5 - 0.01 * i for i in range(9)]
    keyword_ids = [11, 12, 13, 14, 1, 15, 16, 17, 18, 19]
    dense, keyword = lists(dense_scores, keyword_ids, [3.0 - 0.1 * i for i in range(10)])
    ranked = fuse(dense, keyword, k=2)
    assert ranked[0].id == 1 and (ranked[0].dense_rank, ranked[0].keyword_rank) == (1, 5)
    assert fuse(dense, keyword, k=1, fusion=Fusion("convex", alpha=0.1))[0].id == 11


def test_peakedness_and_its_edges():
    assert peakedness(np.array([2.0, 2.0]), 2, 0.0) == 0.0  # flat from the floor: mean = best
    assert peakedness(np.array([4.0]), 4, 0.0) == pytest.approx(0.75)  # 3 empty places score 0
    assert peakedness(np.array([]), 5, 0.0) == 0.0
    assert peakedness(np.array([-0.2, -0.3]), 2, 0.0) == 0.0  # best under the floor: no confidence
    # l2 scores are negative distances, with no floor: the list's least score stands in.
    assert peakedness(np.array([-1.0, -2.0, -3.0]), 3, None) == pytest.approx(0.5)
    assert adaptive_alpha(np.array([]), np.array([]), 0.0) == 0.5  # neither list says anything
    assert adaptive_alpha(np.array([0.5, 0.1]), np.array([]), 0.0) == 1.0  # no text shares a term: dense alone


def test_other_normalizations_as_documented():
    dense, keyword = lists([0.9, 0.5, 0.1], [3, 4, -1], [4.0, 2.0, -np.inf])
    padded = np.array([4.0, 2.0, 0.0])  # BM25 padded to the dense list's 3 places
    dense_values = np.array([0.9, 0.5, 0.1])
    ranked = {r.id: r.score for r in fuse(dense, keyword, k=4, fusion=Fusion("convex", alpha=0.5, norm="dbsf"))}
    assert ranked[2] == pytest.approx(0.5 * dbsf(dense_values, 0.5) + 0.5 * dbsf(padded, 0.0), rel=1e-5)
    # Missing from the dense list: that list's least score.
    assert ranked[4] == pytest.approx(0.5 * dbsf(dense_values, 0.1) + 0.5 * dbsf(padded, 2.0), rel=1e-5)
    z = {r.id: r.score for r in fuse(dense, keyword, k=4, fusion=Fusion("convex", alpha=0.5, norm="z"))}
    zd, zk = (dense_values - 0.5) / dense_values.std(), (padded - 2.0) / padded.std()
    assert [z[1], z[3], z[4]] == pytest.approx(
        [0.5 * zd[0] + 0.5 * zk[2], 0.5 * zd[2] + 0.5 * zk[0], 0.5 * zd[2] + 0.5 * zk[1]], abs=1e-6
    )
    best = fuse(dense, keyword, k=4, fusion=Fusion("convex", alpha=0.5, norm="mm+best"), keyword_best=8.0)
    assert {r.id: r.score for r in best}[3] == pytest.approx(0.5 * 0.0 + 0.5 * 4.0 / 8.0)


def test_one_empty_list_fuses_by_the_other():
    dense, keyword = lists([0.9, 0.5], [3, 4], [4.0, 2.0])
    empty = (np.array([], dtype=np.int64), np.array([], dtype=np.float32))
    for norm in ("dbsf", "z", "mm+tmm"):
        fusion = Fusion("convex", norm=norm)
        assert [r.id for r in fuse(empty, keyword, k=3, fusion=fusion)] == [3, 4]
        assert [r.id for r in fuse(dense, empty, k=3, fusion=fusion)] == [1, 2]
        assert all(np.isfinite(r.score) for r in fuse(empty, keyword, k=3, fusion=fusion))


def test_fusion_arguments_are_checked():
    with pytest.raises(InputError, match="--alpha 2.0: must be from 0 to 1"):
        check_fusion("hybrid", None, 2.0)
    with pytest.raises(InputError, match="--alpha goes with --fusion convex"):
        check_fusion("hybrid", None, 0.5, "rrf")


def _imports(path: Path) -> set[str]:
    """Every sbert_cli module a file imports, TYPE_CHECKING blocks included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sbert_cli"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("sbert_cli")}
    return found


def test_retrieval_imports_run_one_way():
    folder = PACKAGE / "retrieval"
    graph = {f"sbert_cli.retrieval.{p.stem}": _imports(p) for p in folder.glob("*.py") if p.stem != "__init__"}
    circles = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ()))
    assert circles == []
