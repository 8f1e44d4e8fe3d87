"""Fine-tuning: `data` (read and check labelled rows), `losses` (which loss for which data),
`mining` (hard negatives), `plan` (settings, checks, run identity), `state` (the output directory
and resuming), `trainer` (sentence-transformers' trainer, wrapped), `callbacks` (progress and
checkpoint marks), `record` (the JSON record and the model card), `isolation` (process state).

Importing this package is cheap: torch and sentence-transformers load when `train_model` runs.
"""

from sbert_cli.training.plan import TrainOptions
from sbert_cli.training.trainer import TrainSummary, train_model

__all__ = ["TrainOptions", "TrainSummary", "train_model"]
