"""The chunking stage through `sbert encode`, on the hash model (tokens are words, with their
character spans: tests/fakes.py `WordCounter`): boundaries, offsets, overlap, prompts,
--truncate, and the settings a store keeps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import HASH_MODEL, hash_embed, words
from typer.testing import CliRunner

from sbert_cli.chunking.split import token_ranges
from sbert_cli.cli import app
from sbert_cli.store.store import Store

runner = CliRunner()
HASH = ["--model", HASH_MODEL]

# Two paragraphs, seven sentences, 44 words.
DOCUMENT = (
    "The harbour woke before dawn. Gulls circled the fishing boats while the nets were mended. "
    "An old captain counted his crew twice.\n\n"
    "By noon the wind turned cold and grey. The boats came home early, heavy with silver fish. "
    "Children ran along the pier to meet them. Nobody spoke of the storm."
)


def encode(*args: str | Path, input: str | None = None):
    return runner.invoke(app, ["encode", *map(str, args), *HASH], input=input)


def rows(store: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(store / s.file) for s in Store.open(store).shards], ignore_index=True)


def write_jsonl(path: Path, *texts: str) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def chunks(store: Path) -> list[tuple[int, int, int, int, str]]:
    df = rows(store)
    return list(zip(df.line, df.chunk, df.start, df.end, df.text, strict=True))


def test_short_records_are_one_row_each_with_their_whole_text(tmp_path):
    source = write_jsonl(tmp_path / "short.jsonl", "A cat sat.", "  Two dogs ran home.  ")
    result = encode(source, "-o", tmp_path / "store", "--chunk-size", "12")
    assert result.exit_code == 0, result.output
    assert "chunked" not in result.stderr
    assert chunks(tmp_path / "store") == [(1, 0, 0, 10, "A cat sat."), (2, 0, 0, 22, "  Two dogs ran home.  ")]
    assert rows(tmp_path / "store").id.tolist() == [1, 2]  # ids as before chunking: input << 40 | line


def test_long_record_is_cut_at_sentence_ends_with_exact_offsets_and_overlap(tmp_path):
    source = write_jsonl(tmp_path / "doc.jsonl", "Short.", DOCUMENT, "Last one.")
    store = tmp_path / "store"
    result = encode(source, "-o", store, "--chunk-size", "16", "--chunk-overlap", "4")
    assert result.exit_code == 0, result.output
    assert "; truncated: 0; chunked: 1 records into 5 chunks; store " in result.stderr
    got = chunks(store)
    assert got == [
        (1, 0, 0, 6, "Short."),
        # 15 words: the sentence end after "mended." lies within the last quarter of the 16 tokens
        (2, 0, 0, 89, "The harbour woke before dawn. Gulls circled the fishing boats while the nets were mended."),
        # cut at a sentence end, and no whole sentence fits in 4 tokens: no overlap; then the
        # paragraph end: a chunk never spans two paragraphs
        (2, 1, 90, 128, "An old captain counted his crew twice."),
        # no sentence end in the last quarter: a word end, and the next chunk overlaps it by 4 words
        (2, 2, 130, 213, "By noon the wind turned cold and grey. The boats came home early, heavy with silver"),
        (2, 3, 189, 261, "early, heavy with silver fish. Children ran along the pier to meet them."),
        (2, 4, 262, 288, "Nobody spoke of the storm."),
        (3, 0, 0, 9, "Last one."),
    ]
    for line, _, start, end, text in got:
        assert (DOCUMENT if line == 2 else text)[start:end] == text
        assert len(words(text)) <= 16
    doc_chunks = [t for line, *_, t in got if line == 2]
    assert words(doc_chunks[3])[:4] == words(doc_chunks[2])[-4:]  # the overlap: 4 tokens
    df = rows(store)
    assert df.id.tolist() == list(range(1, 8))  # unique and rising: a record's extra chunks shift later ids
    assert df.line.tolist() == [1, 2, 2, 2, 2, 2, 3]
    np.testing.assert_allclose(np.stack(df.embedding)[2], hash_embed(got[2][4], 64, max_tokens=2048), atol=1e-6)


def test_a_chunk_never_spans_two_paragraphs_and_starts_the_next_without_overlap(tmp_path):
    text = (
        "One two three. Four five.\n\n"  # a blank line
        "Six seven eight nine ten.\n"  # a line break after a sentence end: a paragraph end too
        "Eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two"
    )
    store = tmp_path / "store"
    result = encode(write_jsonl(tmp_path / "d.jsonl", text), "-o", store, "--chunk-size", "16", "--chunk-overlap", "4")
    assert result.exit_code == 0, result.output
    assert [t for *_, t in chunks(store)] == [
        "One two three. Four five.",
        "Six seven eight nine ten.",
        "Eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two",
    ]


def test_hard_wrapped_lines_are_not_paragraphs(tmp_path):
    """A line break inside a sentence (text wrapped at a width) is a cut only near the limit."""
    text = "alpha beta gamma delta\nepsilon zeta eta theta\niota kappa lambda mu\nnu xi omicron pi\nrho sigma tau"
    store = tmp_path / "store"
    result = encode(write_jsonl(tmp_path / "d.jsonl", text), "-o", store, "--chunk-size", "10", "--chunk-overlap", "2")
    assert result.exit_code == 0, result.output
    got = [t for *_, t in chunks(store)]
    # 10 tokens: the line end after "theta" (8) lies in the second half; the next chunk overlaps
    # the cut (inside a sentence) by 2 words
    assert got[0] == "alpha beta gamma delta\nepsilon zeta eta theta"
    assert got[1].startswith("eta theta\niota")
    assert all(len(words(t)) <= 10 for t in got)


def test_after_a_sentence_end_the_overlap_is_whole_sentences(tmp_path):
    text = "Alpha beta gamma delta epsilon zeta eta theta iota kappa. Go now. Lambda mu nu xi omicron pi rho sigma."
    store = tmp_path / "store"
    result = encode(write_jsonl(tmp_path / "d.jsonl", text), "-o", store, "--chunk-size", "14", "--chunk-overlap", "4")
    assert result.exit_code == 0, result.output
    got = [t for *_, t in chunks(store)]
    # the cut after "now." (a sentence end in the last quarter); "Go now." fits in 4 tokens
    assert got == [
        "Alpha beta gamma delta epsilon zeta eta theta iota kappa. Go now.",
        "Go now. Lambda mu nu xi omicron pi rho sigma.",
    ]


def test_no_overlap_chunks_tile_the_record(tmp_path):
    store = tmp_path / "store"
    result = encode(
        write_jsonl(tmp_path / "d.jsonl", DOCUMENT), "-o", store, "--chunk-size", "10", "--chunk-overlap", "0"
    )
    assert result.exit_code == 0, result.output
    got = chunks(store)
    assert [(c, s, e) for _, c, s, e, _ in got] == [
        (0, 0, 61),
        (1, 62, 116),
        (2, 117, 128),  # "crew twice.": the paragraph ends there
        (3, 130, 168),
        (4, 169, 219),
        (5, 220, 261),
        (6, 262, 288),
    ]
    assert words(" ".join(t for *_, t in got)) == words(DOCUMENT)
    for (_, _, _, end, _), (_, _, start, _, _) in zip(got, got[1:], strict=False):
        assert DOCUMENT[end:start].isspace()  # nothing but whitespace falls between chunks


def test_a_single_huge_sentence_is_cut_at_word_then_token_boundaries(tmp_path):
    sentence = " ".join(f"word{i}" for i in range(30))  # no sentence end anywhere
    glued = "-".join(f"part{i}" for i in range(30))  # one "word" of 30 tokens: no whitespace at all
    store = tmp_path / "store"
    result = encode(
        write_jsonl(tmp_path / "d.jsonl", sentence, glued), "-o", store, "--chunk-size", "12", "--chunk-overlap", "2"
    )
    assert result.exit_code == 0, result.output
    got = chunks(store)
    assert [(line, c, len(words(t)), t.split()[0] if line == 1 else t[:7]) for line, c, _, _, t in got] == [
        (1, 0, 12, "word0"),
        (1, 1, 12, "word10"),
        (1, 2, 10, "word20"),
        (2, 0, 12, "part0-p"),
        (2, 1, 12, "part10-"),
        (2, 2, 10, "part20-"),
    ]
    for line, _, start, end, text in got:
        assert (sentence if line == 1 else glued)[start:end] == text


def test_the_prompt_counts_against_the_chunk_size(tmp_path):
    store = tmp_path / "store"
    result = encode(
        write_jsonl(tmp_path / "d.jsonl", DOCUMENT),
        "-o",
        store,
        "--chunk-size",
        "10",
        "--chunk-overlap",
        "0",
        "--prompt",
        "search document: ",
    )
    assert result.exit_code == 0, result.output
    texts = [t for *_, t in chunks(store)]
    assert max(len(words(t)) for t in texts) == 8  # 10 tokens less the prompt's two words
    assert words(" ".join(texts)) == words(DOCUMENT)
    assert Store.open(store).model.prompt == "search document: "


def test_truncate_keeps_one_row_and_says_what_it_dropped(tmp_path):
    store = tmp_path / "store"
    source = write_jsonl(tmp_path / "d.jsonl", "Short.", DOCUMENT)
    result = encode(source, "-o", store, "--truncate", "--max-seq-length", "10")
    assert result.exit_code == 0, result.output
    # 10 of 52 words reach the model: everything after "boats" is dropped (288 - 61 characters)
    assert "; truncated: 1 (dropped 227 characters, 42 tokens); store " in result.stderr
    assert chunks(store) == [(1, 0, 0, 6, "Short."), (2, 0, 0, 61, DOCUMENT)]  # the text stays whole
    assert DOCUMENT[:61] == "The harbour woke before dawn. Gulls circled the fishing boats"
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["chunking"] == {"mode": "truncate", "size": 10, "overlap": 0, "whole": 0}


def test_default_settings_are_recorded_and_an_append_inherits_them(tmp_path):
    store = tmp_path / "store"
    first = encode(write_jsonl(tmp_path / "a.jsonl", DOCUMENT), "-o", store, "--max-seq-length", "20")
    assert first.exit_code == 0, first.output
    manifest = json.loads((store / "manifest.json").read_text())
    # chunks of half the model's length; 32 tokens of overlap, or a quarter of a smaller chunk
    assert (manifest["version"], manifest["chunking"]) == (3, {"mode": "chunk", "size": 10, "overlap": 2, "whole": 20})
    assert manifest["has_chunks"] is True and manifest["kept_fields"] == []
    again = encode(write_jsonl(tmp_path / "b.jsonl", DOCUMENT), "-o", store)
    assert again.exit_code == 0, again.output
    df = rows(store)
    first_rows, second_rows = df[df.source.str.endswith("a.jsonl")], df[df.source.str.endswith("b.jsonl")]
    assert len(first_rows) == 7 and first_rows.text.tolist() == second_rows.text.tolist()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--chunk-size", "16"], "this run asks for chunks of 16 tokens overlapping by 4"),
        (["--chunk-overlap", "2"], "this run asks for chunks of 12 tokens overlapping by 2"),
        (["--truncate"], "this run asks for --truncate (at 2048 tokens)"),
    ],
)
def test_an_append_with_other_chunking_is_refused_in_one_line(tmp_path, flags, message):
    store = tmp_path / "store"
    assert (
        encode(
            write_jsonl(tmp_path / "a.jsonl", DOCUMENT), "-o", store, "--chunk-size", "12", "--chunk-overlap", "4"
        ).exit_code
        == 0
    )
    before = (store / "manifest.json").read_text()
    result = encode(write_jsonl(tmp_path / "b.jsonl", "More text."), "-o", store, *flags)
    assert result.exit_code == 2
    assert result.stderr == (
        f"sbert: error: this store was made with chunks of 12 tokens overlapping by 4; {message}\n"
    )
    assert (store / "manifest.json").read_text() == before
    same = encode(write_jsonl(tmp_path / "c.jsonl", DOCUMENT), "-o", store)  # no flags: the store's settings
    assert same.exit_code == 0, same.output
    df = rows(store)
    assert df[df.source.str.endswith("a.jsonl")].text.tolist() == df[df.source.str.endswith("c.jsonl")].text.tolist()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--chunk-size", "0"], "--chunk-size 0: choose 1 to the model's max_seq_length (2048)"),
        (["--chunk-size", "3000"], "--chunk-size 3000: choose 1 to the model's max_seq_length (2048)"),
        (["--chunk-overlap", "-1"], "--chunk-overlap -1: must be 0 or more"),
        (
            ["--chunk-size", "8", "--chunk-overlap", "8"],
            "--chunk-size 8 leaves 8 tokens for text after 0 special and prompt tokens, not more than --chunk-overlap 8",
        ),
        (["--truncate", "--chunk-size", "8"], "--truncate keeps one row per record; it does not take --chunk-size"),
    ],
)
def test_bad_chunking_options_are_one_line_exit_2_and_write_nothing(tmp_path, flags, message):
    store = tmp_path / "store"
    result = encode(write_jsonl(tmp_path / "a.jsonl", DOCUMENT), "-o", store, *flags)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"sbert: error: {message}") and result.stderr.count("\n") == 1
    assert not store.exists()


def test_token_ranges_cover_every_token_and_respect_the_budget():
    text = DOCUMENT
    spans = np.array([m.span() for m in __import__("re").finditer(r"\w+", text)])
    for budget in (3, 5, 8, 13, 44, 50):
        for overlap in range(0, min(budget, 4)):
            ranges = token_ranges(text, spans, budget, overlap)
            assert ranges[0][0] == 0 and ranges[-1][1] == len(spans)
            assert all(0 < e - s <= budget for s, e in ranges)
            assert all(s2 <= e1 and s2 > s1 for (s1, e1), (s2, _) in zip(ranges, ranges[1:], strict=False))


def test_progress_and_summary_count_records_and_the_chunks_they_became(tmp_path):
    source = write_jsonl(tmp_path / "doc.jsonl", "Short.", DOCUMENT, "Last one.")
    result = encode(
        source, "-o", tmp_path / "store", "--chunk-size", "16", "--chunk-overlap", "4", "--progress-interval", "0"
    )
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    progress = [line for line in lines if line.startswith("sbert: encoding: ")]
    assert progress and all(
        re.match(r"sbert: encoding: [0-3]/3 records \(\d+%\)( as [1-7] chunks)?, ", p) for p in progress
    )
    assert "sbert: encoded 3 records as 7 chunks from 1 input(s) into 1 shard(s) in " in result.stderr
    assert re.search(r"\(\d[\d,.]* chunks/s, ", result.stderr)
    plain = write_jsonl(tmp_path / "plain.jsonl", "Short.", "Last one.")
    result = encode(plain, "-o", tmp_path / "plain")
    assert "sbert: encoded 2 texts from 1 input(s)" in result.stderr  # one row per record: as before


def test_by_default_a_record_the_model_reads_whole_stays_one_row(tmp_path):
    """max_seq_length 20: chunks of 10 for records over 20 tokens; a paragraph of 15 stays whole."""
    paragraph = "One two three four five six seven eight nine ten. Eleven twelve thirteen fourteen fifteen."
    store = tmp_path / "store"
    result = encode(write_jsonl(tmp_path / "d.jsonl", paragraph, DOCUMENT), "-o", store, "--max-seq-length", "20")
    assert result.exit_code == 0, result.output
    assert "; chunked: 1 records into " in result.stderr
    got = chunks(store)
    assert got[0] == (1, 0, 0, len(paragraph), paragraph)
    assert {line for line, *_ in got[1:]} == {2} and max(len(words(t)) for *_, t in got[1:]) <= 10
    chunking = json.loads((store / "manifest.json").read_text())["chunking"]
    assert chunking == {"mode": "chunk", "size": 10, "overlap": 2, "whole": 20}
    # --chunk-size cuts every record longer than it, as asked
    result = encode(write_jsonl(tmp_path / "e.jsonl", paragraph), "-o", tmp_path / "s2", "--chunk-size", "10")
    assert result.exit_code == 0, result.output
    assert [t for *_, t in chunks(tmp_path / "s2")] == [
        "One two three four five six seven eight nine ten.",
        "Eleven twelve thirteen fourteen fifteen.",
    ]
