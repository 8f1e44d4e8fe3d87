"""The chunking stage in a Ray driver: the model's tokenizer without its weights.

The driver cuts records into chunk rows exactly as a local run does (chunking/), so the store a
Ray run makes is a local run's; workers get the rows with their token ids and only run the model.
Loading the tokenizer alone keeps a large model's weights out of the driver's memory.
"""

from __future__ import annotations

from sbert_cli.chunking import Chunker, ChunkStats, FastTokenCounter, TokenCounter
from sbert_cli.encoding.chunk_settings import chunker_from_counter
from sbert_cli.encoding.settings import ModelSettings
from sbert_cli.errors import SbertError
from sbert_cli.store.manifest import ChunkingRecord


def driver_token_counter(settings: ModelSettings) -> tuple[TokenCounter | None, str]:
    """(the encoder's token counter, the model's name), as `Encoder.token_counter` makes it."""
    from sbert_cli.encoding import loader

    factory = loader._factory_for(settings)
    if factory is not None:  # a registered stand-in (the tests' hash model): cheap to load whole
        encoder = factory(settings)
        return encoder.token_counter(), encoder.describe().name
    from transformers import AutoTokenizer

    spec = loader._resolved_key(settings)[0]
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.path)
    except (OSError, ValueError) as exc:
        raise SbertError(f"{spec.name}: could not load the tokenizer ({exc})") from exc
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None, spec.name
    own = type(backend).from_str(backend.to_str())  # as the encoder's: truncating at max_seq_length
    own.enable_truncation(max_length=spec.max_seq_length)
    own.no_padding()
    return FastTokenCounter(own, spec.prompt, spec.do_lower_case), spec.name


def driver_chunker(settings: ModelSettings, chunking: ChunkingRecord, stats: ChunkStats) -> Chunker:
    counter, name = driver_token_counter(settings)
    return chunker_from_counter(counter, chunking, stats, name)
