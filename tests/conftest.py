"""Shared fixtures: one model load per test session, small real inputs from sample_corpus/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory):
    """A fresh ONNX graph cache per test session (subprocesses inherit it): the export path runs
    in every session instead of hiding behind a graph some earlier run left in ~/.cache."""
    path = tmp_path_factory.mktemp("sbert-cache")
    old = os.environ.get("SBERT_CACHE")
    os.environ["SBERT_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SBERT_CACHE", None)
    else:
        os.environ["SBERT_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def hash_model():
    """Model names `hash:DIM` give the deterministic HashEncoder (tests/fakes.py): plumbing tests
    run on it, without loading a model."""
    from fakes import hash_factory

    from sbert_cli.encoding.loader import ENCODER_FACTORIES

    ENCODER_FACTORIES["hash"] = hash_factory
    yield
    ENCODER_FACTORIES.pop("hash", None)


ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = ROOT / "sample_corpus"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def encoder():
    """The default model in fp32 on CPU, shared by every test (and by CLI calls made in-process,
    through `cached_encoder`)."""
    from sbert_cli.encoding.loader import cached_encoder

    return cached_encoder(None, device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    texts = []
    for path in sorted(SAMPLE_CORPUS.glob("*.txt")):
        texts += [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory, encoder) -> Path:
    """A store of the whole sample corpus (500 paragraphs), built once. Treat it as read-only."""
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus

    path = tmp_path_factory.mktemp("stores") / "sample"
    encode_corpus([str(SAMPLE_CORPUS)], path, EncodeOptions(device="cpu", dtype="fp32", shard_size=200), quiet=True)
    return path
