"""Which loss trains on which data, and building it from sentence-transformers' losses.

`auto` follows the data: CoSENT for scored pairs (it ranks pairs by their scores, which is what
STS-style labels mean, and trains better than regressing cosines), MultipleNegativesRankingLoss
for (anchor, positive) pairs and triplets (the other rows of a batch are the negatives).
"""

from __future__ import annotations

from sbert_cli.errors import InputError
from sbert_cli.training.data import TrainingData

LOSSES = ("auto", "cosent", "cosine", "mnrl", "contrastive", "triplet")
# The data shapes each loss trains on ("mined": pairs given negatives by --mine-hard-negatives).
LOSS_SHAPES = {
    "cosent": ("scored",),
    "cosine": ("scored",),
    "contrastive": ("scored",),
    "mnrl": ("pairs", "triplets", "mined"),
    "triplet": ("triplets", "mined"),
}
LOSS_CLASSES = {
    "cosent": "CoSENTLoss",
    "cosine": "CosineSimilarityLoss",
    "mnrl": "MultipleNegativesRankingLoss",
    "contrastive": "ContrastiveLoss",
    "triplet": "TripletLoss",
}
_SHAPE_WORDS = {
    "scored": "scored pairs (--score-column)",
    "pairs": "(anchor, positive) pairs",
    "triplets": "(anchor, positive, negative) triplets",
    "mined": "pairs with --mine-hard-negatives",
}


def choose_loss(requested: str, data: TrainingData, mine: bool) -> str:
    """The loss to train with: `requested`, or the one `auto` picks for the data's shape."""
    if requested not in LOSSES:
        raise InputError(f"--loss {requested}: choose from {', '.join(LOSSES)}")
    shape = data.shape
    if mine:
        if shape != "pairs":
            raise InputError(
                f"--mine-hard-negatives needs (anchor, positive) pairs without a score; the data has {_SHAPE_WORDS[shape]}"
            )
        shape = "mined"
    loss = requested if requested != "auto" else ("cosent" if shape == "scored" else "mnrl")
    if shape not in LOSS_SHAPES[loss]:
        takes = " or ".join(_SHAPE_WORDS[s] for s in LOSS_SHAPES[loss])
        raise InputError(f"--loss {loss} trains on {takes}; the data has {_SHAPE_WORDS[shape]}")
    if loss == "contrastive":
        _check_binary(data)
    return loss


def _check_binary(data: TrainingData) -> None:
    """Contrastive loss takes similar (1) / dissimilar (0) labels, not graded scores."""
    assert data.scores is not None
    for row, score in enumerate(data.scores):
        if score not in (0.0, 1.0):
            raise InputError(
                f"{data.where(row)}: --loss contrastive needs scores at the ends of --score-range "
                "(dissimilar / similar); graded scores train with cosent or cosine"
            )


def build_loss(name: str, model):
    """The sentence-transformers loss object for `name`, bound to `model`."""
    from sentence_transformers.sentence_transformer import losses

    return getattr(losses, LOSS_CLASSES[name])(model)


def uses_in_batch_negatives(name: str) -> bool:
    """MNRL treats every other row of a batch as a negative: a duplicate text in the batch would be
    a false negative, so those batches are drawn without duplicates."""
    return name == "mnrl"
