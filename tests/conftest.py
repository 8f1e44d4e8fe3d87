"""Shared fixtures: the hash stand-in model for plumbing tests, one real model load per test
session for the parity tests, small real inputs from sample_corpus/.

Plumbing tests (readers, store, resume, lock, index, search, cluster, CLI options and errors)
encode with `HASH_MODEL` (tests/fakes.py), which loads nothing; tests that take the `encoder`
fixture (or `real_sample_store`) use the real all-MiniLM-L6-v2, loaded once and shared.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = ROOT / "sample_corpus"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
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
def hash_model() -> Iterator[None]:
    """Model names `hash:DIM` give the deterministic HashEncoder (tests/fakes.py): plumbing tests
    run on it, without loading a model."""
    from fakes import hash_factory

    from sbert_cli.encoding.loader import ENCODER_FACTORIES

    ENCODER_FACTORIES["hash"] = hash_factory
    yield
    ENCODER_FACTORIES.pop("hash", None)


REAL_MODEL_FIXTURES = {"encoder", "st_model", "real_sample_store"}


@pytest.fixture(autouse=True)
def one_torch_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests of the real model run torch on one thread, and put the count back after each test.

    This machine's two cores are shared with other jobs, and there two threads that wait on each
    other at every operator took 2.5x the wall time (and 2.4x the CPU time) of one: 25 paragraphs
    in 5.0 s against 2.0 s at load 9. Results do not depend on it; other tests see torch's own
    count (some compare with it)."""
    if not REAL_MODEL_FIXTURES & set(request.fixturenames):
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def encoder():
    """The default model in fp32 on CPU, shared by every real-model test (and by CLI calls made
    in-process with `--device cpu --dtype fp32`, through `cached_encoder`)."""
    from sbert_cli.encoding.loader import cached_encoder

    return cached_encoder(None, device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    texts = []
    for path in sorted(SAMPLE_CORPUS.glob("*.txt")):
        texts += [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole sample corpus (500 paragraphs in 3 inputs, shards of 200) encoded with the hash
    model, built once. Treat it as read-only."""
    from fakes import HASH_MODEL

    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus

    path = tmp_path_factory.mktemp("stores") / "sample"
    encode_corpus([str(SAMPLE_CORPUS)], path, EncodeOptions(model=HASH_MODEL, shard_size=200))
    return path


@pytest.fixture(scope="session")
def real_sample_store(tmp_path_factory: pytest.TempPathFactory, encoder) -> Path:
    """The sample corpus encoded with the real model (for subprocess tests, which cannot use the
    hash model). Treat it as read-only."""
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus

    path = tmp_path_factory.mktemp("stores") / "real-sample"
    encode_corpus([str(SAMPLE_CORPUS)], path, EncodeOptions(device="cpu", dtype="fp32", shard_size=200))
    return path


@pytest.fixture()
def store(tmp_path: Path, built: Path) -> Path:
    """A private copy of the module's `built` store, so a test may damage or change it."""
    path = tmp_path / "store"
    shutil.copytree(built, path)
    return path
