"""sentence-transformers model directories read as sentence-transformers reads them: pooling
modes concatenated in its order, prompts (named, given, the model's default; left out of pooling
where the Pooling config says so), Dense and Normalize modules, anything else refused by name.

The fast tests read hand-written model directories (no torch). The parity tests build tiny BERT
models (hidden 32, 2 layers) with sentence-transformers itself and compare vectors in fp32:
cosine >= 0.9999 to `SentenceTransformer.encode` with the same arguments.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from fakes import save_tiny_bert
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.encoding.model import fingerprint, load_spec, resolve_model_path
from sbert_cli.errors import InputError

runner = CliRunner()
TEXTS = [
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "x",
    "A man is eating food.",  # a duplicate: encoded once, returned twice
    "The quick brown fox jumps over the lazy dog, " * 9,  # longer than max_seq_length (64): truncated
    "Two dogs play in the snow.",
]
MIN_COSINE = 0.9999


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def module(idx: int, kind: str, path: str) -> dict:
    return {"idx": idx, "name": str(idx), "path": path, "type": f"sentence_transformers.models.{kind}"}


def handmade(tmp_path: Path, pooling: dict, extra: list[tuple[str, dict]] = (), prompts: dict | None = None) -> Path:
    """A model directory with configs only (no weights): enough for `load_spec`."""
    root = tmp_path / "model"
    write_json(root / "config.json", {"hidden_size": 8, "max_position_embeddings": 128, "model_type": "bert"})
    modules = [module(0, "Transformer", ""), module(1, "Pooling", "1_Pooling")]
    write_json(root / "1_Pooling" / "config.json", pooling)
    for i, (kind, cfg) in enumerate(extra, start=2):
        modules.append(module(i, kind, f"{i}_{kind}"))
        write_json(root / f"{i}_{kind}" / "config.json", cfg)
        if kind == "Dense":
            (root / f"{i}_{kind}" / "model.safetensors").write_bytes(b"weights")
    write_json(root / "modules.json", modules)
    if prompts is not None:
        write_json(root / "config_sentence_transformers.json", prompts)
    return root


def test_legacy_pooling_flags_concatenate_in_sentence_transformers_order(tmp_path):
    # Flags written mean, max, cls: sentence-transformers concatenates cls, max, mean whatever the order.
    flags = {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True, "pooling_mode_cls_token": True}
    spec = load_spec(str(handmade(tmp_path, {"word_embedding_dimension": 8, **flags})))
    assert spec.pooling == ("cls", "max", "mean")
    assert spec.dim == 24


def test_pooling_mode_list_keeps_the_order_listed(tmp_path):
    spec = load_spec(str(handmade(tmp_path, {"embedding_dimension": 8, "pooling_mode": ["mean", "cls"]})))
    assert spec.pooling == ("mean", "cls")
    assert (spec.dim, spec.hidden_size) == (16, 8)


def test_dense_and_normalize_modules_are_run_not_refused(tmp_path):
    dense = {"in_features": 8, "out_features": 4, "activation_function": "torch.nn.modules.activation.Tanh"}
    root = handmade(tmp_path, {"embedding_dimension": 8, "pooling_mode": "mean"}, [("Dense", dense), ("Normalize", {})])
    spec = load_spec(str(root))
    assert spec.modules == ("Dense:2_Dense",)
    assert spec.normalize is True
    assert spec.dim == 4
    assert spec.describe()["modules"] == ["Dense:2_Dense"]
    assert load_spec(str(root), normalize=False).normalize is False


def test_unsupported_module_is_refused_by_name(tmp_path):
    root = handmade(tmp_path, {"embedding_dimension": 8}, [("LayerNorm", {"dimension": 8})])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one\ntwo\n", encoding="utf-8")
    result = runner.invoke(app, ["encode", str(corpus), "-o", str(tmp_path / "store"), "--model", str(root)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"sbert: error: {root}: sentence-transformers module 'LayerNorm' (2_LayerNorm) is not supported; "
        "sbert runs Transformer, Pooling, Dense, Normalize\n"
    )
    assert not (tmp_path / "store").exists()


def test_modules_sbert_cannot_run_as_configured_are_refused(tmp_path):
    token_dense = {"in_features": 8, "out_features": 8, "module_input_name": "token_embeddings"}
    with pytest.raises(InputError, match="Dense on 'token_embeddings' is not supported"):
        load_spec(str(handmade(tmp_path / "a", {"embedding_dimension": 8}, [("Dense", token_dense)])))
    custom = {"in_features": 8, "out_features": 8, "activation_function": "my_package.Swish"}
    with pytest.raises(InputError, match="activation 'my_package.Swish' is not a torch.nn module"):
        load_spec(str(handmade(tmp_path / "b", {"embedding_dimension": 8}, [("Dense", custom)])))
    wrong_size = {"in_features": 16, "out_features": 4}
    with pytest.raises(InputError, match="2_Dense takes vectors of 16 values but receives 8"):
        load_spec(str(handmade(tmp_path / "c", {"embedding_dimension": 8}, [("Dense", wrong_size)])))


def test_prompts_resolve_as_sentence_transformers_resolves_them(tmp_path):
    prompts = {"prompts": {"query": "query: ", "doc": "passage: ", "none": ""}, "default_prompt_name": "query"}
    root = str(handmade(tmp_path, {"embedding_dimension": 8, "include_prompt": False}, prompts=prompts))
    assert load_spec(root).prompt == "query: "  # the model's default prompt
    assert load_spec(root).include_prompt is False
    assert load_spec(root, prompt_name="doc").prompt == "passage: "
    assert load_spec(root, prompt="Represent this: ").prompt == "Represent this: "
    assert load_spec(root, prompt="").prompt is None  # explicitly none, default or not
    assert load_spec(root, prompt_name="none").prompt is None
    with pytest.raises(InputError, match=r"--prompt-name title: .* has no such prompt \(it has: doc, none, query\)"):
        load_spec(root, prompt_name="title")
    with pytest.raises(InputError, match="give --prompt or --prompt-name, not both"):
        load_spec(root, prompt="a", prompt_name="doc")


def test_max_seq_length_from_the_tokenizer_when_sentence_bert_config_has_none(tmp_path):
    root = handmade(tmp_path, {"embedding_dimension": 8})
    write_json(root / "tokenizer_config.json", {"model_max_length": 64})
    assert load_spec(str(root)).max_seq_length == 64
    write_json(root / "sentence_bert_config.json", {"max_seq_length": 100})
    assert load_spec(str(root)).max_seq_length == 100


def test_fingerprint_covers_dense_weights_and_keeps_earlier_models_unchanged(tmp_path):
    dense = {"in_features": 8, "out_features": 4}
    root = handmade(tmp_path, {"embedding_dimension": 8}, [("Dense", dense)])
    before = load_spec(str(root)).fingerprint
    (root / "2_Dense" / "model.safetensors").write_bytes(b"other weights")
    assert load_spec(str(root)).fingerprint != before

    # A model without Dense modules hashes what earlier releases hashed, so their stores still match.
    _, bundled = resolve_model_path(None)
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        if (bundled / name).is_file():
            digest.update(name.encode() + b"\0" + (bundled / name).read_bytes())
    digest.update((bundled / "model.safetensors").read_bytes())
    assert fingerprint(bundled) == "sha256:" + digest.hexdigest()[:32]


# -- parity with sentence-transformers --------------------------------------------------------------
@pytest.fixture(scope="session")
def st_models(tmp_path_factory) -> dict[str, Path]:
    """Three tiny sentence-transformers models, saved by sentence-transformers:

    a: pooling ["mean", "cls", "max"], include_prompt false, Dense 96->24 tanh, Normalize, prompts
       with a default; b: the legacy pooling flags for cls, max and mean written in another order,
       Normalize; c: weightedmean, lasttoken, mean_sqrt_len_tokens without the prompt, Dense
       96->16 identity with a residual projection, weights as pytorch_model.bin, no Normalize;
       d: lasttoken and mean without the (default) prompt, Normalize: no Dense, so fast queries apply.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    root = tmp_path_factory.mktemp("st_models")
    torch.manual_seed(0)
    save_tiny_bert(root / "bert")

    def build(name, pooling, include_prompt, extra, prompts, default=None, **save) -> Path:
        modules = [Transformer(str(root / "bert"), max_seq_length=64), Pooling(32, pooling, include_prompt), *extra]
        model = SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default, device="cpu")
        model.save(str(root / name), **save)
        return root / name

    prompts = {"query": "query: ", "doc": "passage: "}
    a = build(
        "a",
        ("mean", "cls", "max"),
        False,
        [Dense(96, 24, activation_function=torch.nn.Tanh()), Normalize()],
        prompts,
        "query",
    )
    b = build("b", ("cls", "max", "mean"), True, [Normalize()], {})
    legacy = {"word_embedding_dimension": 32}
    legacy.update({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True, "pooling_mode_cls_token": True})
    write_json(b / "1_Pooling" / "config.json", legacy)
    residual = Dense(96, 16, activation_function=torch.nn.Identity(), use_residual=True)
    c = build(
        "c",
        ("weightedmean", "lasttoken", "mean_sqrt_len_tokens"),
        False,
        [residual],
        {"query": "search query: "},
        safe_serialization=False,
    )
    assert (c / "2_Dense" / "pytorch_model.bin").is_file()
    d = build("d", ("lasttoken", "mean"), False, [Normalize()], {"query": "query: "}, "query")
    return {"a": a, "b": b, "c": c, "d": d}


def st_encode(path: Path, texts: list[str], **kwargs) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_numpy=True, **kwargs)


def sbert_encode(path: Path, texts: list[str], **kwargs) -> np.ndarray:
    from sbert_cli.encoding.encoder import Encoder

    return Encoder(spec=load_spec(str(path), **kwargs), device="cpu", dtype="fp32").encode(texts)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, prompt",
    [
        ("a", {}),  # the model's default prompt ("query: "), left out of pooling
        ("a", {"prompt_name": "doc"}),
        ("a", {"prompt": "Represent this sentence: "}),
        ("a", {"prompt": ""}),
        ("b", {}),
        ("c", {"prompt_name": "query"}),
        ("c", {}),
    ],
)
def test_vectors_match_sentence_transformers(st_models, model, prompt):
    expected = st_encode(st_models[model], TEXTS, **prompt)
    got = sbert_encode(st_models[model], TEXTS, **prompt)
    assert got.shape == expected.shape
    assert cosines(got, expected).min() >= MIN_COSINE
    if model == "c":  # no Normalize module: the vectors' lengths match too
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(expected, axis=1), rtol=1e-4)


@pytest.mark.slow
def test_encode_records_the_prompt_and_appends_with_it(st_models, tmp_path):
    corpus, more = tmp_path / "corpus.txt", tmp_path / "more.txt"
    corpus.write_text("\n".join(TEXTS[:3]) + "\n", encoding="utf-8")
    more.write_text("\n".join(TEXTS[3:]) + "\n", encoding="utf-8")
    store = tmp_path / "store"
    model = ["--model", str(st_models["a"]), "--device", "cpu", "--dtype", "fp32", "-q"]
    # --truncate: the comparison is with sentence-transformers' one (truncated) vector per text
    result = runner.invoke(app, ["encode", str(corpus), "-o", str(store), "--prompt-name", "doc", "--truncate", *model])
    assert result.exit_code == 0, result.output
    recorded = json.loads((store / "manifest.json").read_text())["model"]
    assert (recorded["prompt"], recorded["modules"], recorded["dim"]) == ("passage: ", ["Dense:2_Dense"], 24)

    # Appending without a prompt option keeps the store's prompt (not the model's default, "query: ").
    result = runner.invoke(app, ["encode", str(more), "-o", str(store), *model])
    assert result.exit_code == 0, result.output
    from sbert_cli.store.store import Store

    _, vectors = Store.open(store).load_embeddings()
    assert cosines(vectors, st_encode(st_models["a"], TEXTS, prompt_name="doc")).min() >= MIN_COSINE

    other = runner.invoke(app, ["encode", str(more), "-o", str(store), "--force", "--prompt-name", "query", *model])
    assert other.exit_code == 2
    assert "prompt: store 'passage: ' vs 'query: '" in other.stderr


@pytest.mark.slow
def test_similarity_takes_prompt_options(st_models):
    args = ["similarity", "A man is eating food.", "A man eats.", "--model", str(st_models["a"]), "--format", "json"]
    result = runner.invoke(app, [*args, "--device", "cpu", "--dtype", "fp32", "--prompt-name", "doc"])
    assert result.exit_code == 0, result.output
    score = json.loads(result.stdout)[0]["score"]
    a, b = st_encode(st_models["a"], ["A man is eating food.", "A man eats."], prompt_name="doc")
    assert score == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["b", "d"])
def test_fast_query_encoder_matches_sentence_transformers(st_models, model):
    """Search's torch-free query path (ONNX graph, tokenizer.json, numpy pooling) gives the same vectors."""
    from sbert_cli.encoding.encoder import Encoder
    from sbert_cli.encoding.query import fast_query_encoder, prepare_query_graph

    record = Encoder(spec=load_spec(str(st_models[model])), device="cpu", dtype="fp32").describe()
    assert prepare_query_graph(record) is not None
    fast = fast_query_encoder(record, "cpu")
    assert fast is not None
    assert cosines(fast.encode(TEXTS), st_encode(st_models[model], TEXTS)).min() >= MIN_COSINE


@pytest.mark.slow
def test_search_after_index_answers_without_importing_torch(st_models, tmp_path):
    import subprocess
    import sys

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    store = tmp_path / "store"
    model = ["--model", str(st_models["d"]), "--device", "cpu", "--dtype", "fp32", "-q"]
    assert runner.invoke(app, ["encode", str(corpus), "-o", str(store), *model]).exit_code == 0
    assert runner.invoke(app, ["index", str(store), "-q"]).exit_code == 0  # caches the query graph
    code = (
        "import sys; from sbert_cli.cli import app\n"
        "try: app(['search', sys.argv[1], 'a man eating', '-k', '2', '--exact', '--format', 'jsonl'])\n"
        "except SystemExit as e: assert e.code in (0, None)\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True, check=True)
    hits = [json.loads(line) for line in result.stdout.splitlines()[:-1]]
    assert result.stdout.splitlines()[-1] == "False False"
    assert [h["text"] for h in hits][0] == "A man is eating food."
