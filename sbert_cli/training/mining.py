"""Hard negatives: for each (anchor, positive), the texts the model ranks just below the positive.

Candidates are the other rows' positives, ranked by the model before training. A candidate that
scores within RELATIVE_MARGIN of the positive (above 95% of its score) is skipped: that close, it
is more often an unlabelled positive than a negative (NV-Retriever's "TopK-PercPos" rule, the one
sentence-transformers recommends). The next ones down become the row's negatives.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from sbert_cli.errors import InputError

RELATIVE_MARGIN = 0.05
DEFAULT_NEGATIVES = 1


@dataclass
class MiningSummary:
    pairs: int  # (anchor, positive) rows given
    rows: int  # training rows after mining
    negatives: int  # per row


def mine_negatives(dataset, model, count: int, loss: str, batch_size: int = 64):
    """(anchor, positive) rows -> rows with `count` mined negatives: one (anchor, positive,
    negative_1..N) row per pair for MNRL, one (anchor, positive, negative) row per negative for
    the triplet loss. Pairs without enough candidates below the margin are left out."""
    from sentence_transformers.util import mine_hard_negatives

    if count < 1:
        raise InputError(f"--negatives {count}: must be at least 1")
    unique_positives = len(set(dataset["positive"]))
    if count >= unique_positives:
        raise InputError(
            f"--negatives {count}: the data has {unique_positives} distinct positives to draw negatives from; "
            "ask for fewer"
        )
    # It prints statistics and draws tqdm bars whatever `verbose` says; the library reports through
    # its Reporter, so both streams are set aside for the call.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        mined = mine_hard_negatives(
            dataset,
            model,
            anchor_column_name="anchor",
            positive_column_name="positive",
            relative_margin=RELATIVE_MARGIN,
            num_negatives=count,
            sampling_strategy="top",
            output_format="n-tuple" if loss == "mnrl" else "triplet",
            batch_size=batch_size,
            verbose=False,
        )
    if len(mined) < 2:
        raise InputError(
            f"hard-negative mining left {len(mined)} row(s): too few candidates fall below the positive's margin; "
            "add data or train without --mine-hard-negatives"
        )
    return mined, MiningSummary(pairs=len(dataset), rows=len(mined), negatives=count)
