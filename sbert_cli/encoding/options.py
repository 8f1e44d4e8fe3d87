"""What an encode run takes and what it gives back, shared by the runner (encoding/runner.py),
the sync (encoding/sync.py) and other executors' loops (distributed/): below all of them, so
imports run one way (runner -> sync -> options)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from sbert_cli.chunking import ChunkStats
from sbert_cli.encoding.plan import PlannedInput, SyncCounts
from sbert_cli.encoding.settings import ModelSettings
from sbert_cli.inputs.reader import ReadOptions
from sbert_cli.progress import Reporter
from sbert_cli.store.manifest import StoreManifest

DEFAULT_SHARD_SIZE = 20_000


@dataclass
class EncodeOptions(ModelSettings):
    """What `sbert encode` takes: the model settings, then how to batch, store and read."""

    batch_tokens: int | None = None
    threads: int | None = None
    workers: int | None = None  # prepare (tokenizer) threads; None: the cores the model does not need
    # Store-level settings: None takes the existing store's, or the default for a new store.
    storage_dtype: str | None = None  # float32 by default
    store_text: bool | None = None  # True by default
    shard_size: int | None = None  # DEFAULT_SHARD_SIZE by default
    force: bool = False
    sync: bool = False  # the store follows the inputs: encoding/sync.py
    glob: str | None = None
    read: ReadOptions = field(default_factory=ReadOptions)
    chunk_mode: str | None = None  # "chunk" or "truncate"; None: the store's, else chunk
    chunk_size: int | None = None  # tokens per chunk; None: the store's, else the model's max_seq_length
    chunk_overlap: int | None = None  # None: the store's, else 32

    def model_settings(self) -> ModelSettings:
        return ModelSettings(**{f.name: getattr(self, f.name) for f in fields(ModelSettings)})


@dataclass
class EncodeSummary:
    store: str
    rows: int = 0
    shards: int = 0
    blank: int = 0
    truncated: int = 0
    tokens: int = 0
    records: int = 0  # records encoded (rows: the chunks they became)
    chunking: ChunkStats = field(default_factory=ChunkStats)
    elapsed: float = 0.0
    inputs_encoded: int = 0
    inputs_skipped: list[str] = field(default_factory=list)
    inputs_resumed: list[str] = field(default_factory=list)
    store_rows: int = 0
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage: read, tokenize, model, write
    sync: SyncCounts | None = None  # --sync: what changed

    @property
    def texts_per_s(self) -> float:
        return self.rows / self.elapsed if self.elapsed else 0.0


# (store_path, manifest, plan, options, total rows, reporter) -> summary: the runner's loop with
# its encoder bound, or another executor's loop (distributed/ray_encode.py), called under the
# store lock.
EncodeLoop = Callable[[Path, StoreManifest, list[PlannedInput], EncodeOptions, int, Reporter], EncodeSummary]
