"""`--plot`: a 2-D PCA projection of the clustered vectors (matplotlib, an optional extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sbert_cli.analysis.cluster.methods import NOISE
from sbert_cli.errors import InputError
from sbert_cli.extras import missing_extra


# -- plot ---------------------------------------------------------------------------------------------
def check_plot_available(path: str) -> None:
    """Fail before clustering, not after, when --plot cannot be honoured."""
    if Path(path).suffix.lower() != ".png":
        raise InputError(f"--plot {path}: name a .png file")
    if not Path(path).parent.exists():
        raise InputError(f"--plot {path}: directory {Path(path).parent} does not exist")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise missing_extra("--plot", "matplotlib", "plot") from None


def cluster_label(label: int, size: int, central: list[dict], width: int = 40) -> str:
    """`cluster 3 (120): moby_dick.txt:45 "Call me Ishmael. Some years…"`: the legend names each
    cluster by its most central record's source (the file name: paths would crowd the plot out),
    line and opening words."""
    if label == NOISE:
        return f"no cluster ({size:,})"
    name = f"cluster {label} ({size:,})"
    if not central:
        return name
    best = central[0]
    text = " ".join((best.get("text") or "").split())
    text = text if len(text) <= width else text[: width - 1].rstrip() + "…"
    return f"{name}: {Path(best['source']).name}:{best['line']}" + (f' "{text}"' if text else "")


def plot_clusters(
    path: str,
    vectors: np.ndarray,
    labels: np.ndarray,
    title: str,
    central: dict[int, list[dict]] | None = None,
    max_legend: int = 20,
) -> None:
    """A 2-D PCA projection of the (sampled) vectors, coloured by cluster; each cluster's number
    sits at its points' middle, and the legend names its most central record (`cluster_label`)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; we only write a file
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    central = central or {}
    if len(vectors) >= 2 and vectors.shape[1] >= 2:
        points = PCA(n_components=2, random_state=0).fit_transform(vectors)
    else:
        points = np.zeros((len(vectors), 2))
    fig, ax = plt.subplots(figsize=(11, 6.5), dpi=110)
    values, counts = np.unique(labels, return_counts=True)
    by_size = [int(v) for v, _ in sorted(zip(values, counts, strict=True), key=lambda vc: -vc[1])]
    cmap = plt.get_cmap("tab20" if len(by_size) > 10 else "tab10")
    size = max(3.0, min(30.0, 6000.0 / max(len(points), 1)))  # big dots for few points, small for many
    for i, label in enumerate(by_size):
        mask = labels == label
        noise = label == NOISE
        ax.scatter(
            points[mask, 0],
            points[mask, 1],
            s=size,
            alpha=0.35 if noise else 0.75,
            color="lightgrey" if noise else cmap(i % cmap.N),
            label=cluster_label(label, int(mask.sum()), central.get(label, [])) if i < max_legend else None,
            linewidths=0,
        )
        if not noise and i < max_legend:
            x, y = np.median(points[mask], axis=0)
            ax.annotate(str(label), (x, y), ha="center", va="center", fontsize=9, weight="bold")
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    legend_title = "largest clusters" if len(by_size) > max_legend else None
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="x-small", markerscale=2, title=legend_title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
