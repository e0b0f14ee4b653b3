from __future__ import annotations

import base64
import itertools
import random
from bisect import bisect_left
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from schemas import DocumentEvent
from streams.ml.chunking import Chunk, Chunker
from streams.ml.indexer import DocumentIndexer
from streams.ml.search import Searcher
from streams.state.edge_store import EdgeVectorStore
from streams.state.encoder import OnnxEncoder


@pytest.fixture(scope="module")
def tokenizer(encoder: OnnxEncoder) -> Tokenizer:
    return encoder.tokenizer


def content_tokens(tokenizer: Tokenizer, text: str) -> list[str]:
    fresh = Tokenizer.from_str(tokenizer.to_str())
    fresh.no_truncation()
    fresh.no_padding()
    return fresh.encode(text, add_special_tokens=False).tokens


def test_short_text_is_one_chunk(tokenizer: Tokenizer) -> None:
    chunks = Chunker(tokenizer, 128, 32, 256).split("  A short note about Kafka.  ")
    assert [(c.number, c.text) for c in chunks] == [(0, "A short note about Kafka.")]


def test_blank_text_has_no_chunks(tokenizer: Tokenizer) -> None:
    assert Chunker(tokenizer, 128, 32, 256).split(" \n ") == []


def test_long_text_windows_respect_size_overlap_and_words(tokenizer: Tokenizer) -> None:
    text = " ".join(f"Sentence {i} mentions antidisestablishmentarianism and streams." for i in range(60))
    chunker = Chunker(tokenizer, 40, 10, 256)
    chunks = chunker.split(text)
    assert len(chunks) > 5
    assert [c.number for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert len(content_tokens(tokenizer, chunk.text)) <= 40
        assert text[chunk.start:chunk.end] == chunk.text
        assert not chunk.text.startswith("##")
        assert text[chunk.start - 1:chunk.start] in ("", " ") or not text[chunk.start - 1].isalnum()
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end, "consecutive chunks overlap"
        assert after.start > before.start, "chunking always advances"
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_chunk_size_is_capped_by_the_model(tokenizer: Tokenizer) -> None:
    chunker = Chunker(tokenizer, 1000, 10, 256)
    assert chunker.size == 254
    assert all(len(content_tokens(tokenizer, c.text)) <= 254 for c in chunker.split("word " * 2000))


def test_overlap_must_be_smaller_than_size(tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="overlap"):
        Chunker(tokenizer, 32, 32, 256)


def unbounded(tokenizer: Tokenizer) -> Tokenizer:
    """The encoder's tokenizer without truncation: counts every token the encoder would see of a text."""
    fresh = Tokenizer.from_str(tokenizer.to_str())
    fresh.no_truncation()
    fresh.no_padding()
    return fresh


@pytest.fixture(scope="module")
def counter(tokenizer: Tokenizer) -> Tokenizer:
    return unbounded(tokenizer)


#: WordPiece's longest word: a token stands for at most this many characters (besides ones the model ignores).
MAX_WORD_CHARS = 100


def assert_bounded_and_covering(chunker: Chunker, counter: Tokenizer, text: str, chunks: list[Chunk]) -> None:
    """Every chunk holds at most the window's tokens (as the encoder counts them) and `MAX_WORD_CHARS` characters a
    token;
    together the chunks cover every token of the text, always advancing."""
    assert [c.number for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text
        assert len(counter.encode(chunk.text, add_special_tokens=False).ids) <= chunker.size
        assert len(chunk.text) <= chunker.size * MAX_WORD_CHARS
    offsets = counter.encode(text, add_special_tokens=False).offsets
    if not offsets:
        assert chunks == []
        return
    assert chunks[0].start == offsets[0][0] and chunks[-1].end == offsets[-1][1]
    token_starts = [start for start, _ in offsets]
    for before, after in itertools.pairwise(chunks):
        assert after.start > before.start, "chunking always advances"
        next_token = bisect_left(token_starts, before.end)
        assert next_token == len(token_starts) or token_starts[next_token] >= after.start, "no token between chunks"


KANA = "".join(map(chr, range(0x3041, 0x3097))) + "".join(map(chr, range(0x30A1, 0x30FB)))
SCRIPTS = {
    "cjk": "".join(map(chr, range(0x4E00, 0x4E80))),
    "thai": "".join(map(chr, range(0x0E01, 0x0E5C))),
    "kana": KANA,
    "hangul": "".join(map(chr, range(0xAC00, 0xAC80))),
    "emoji": "".join(map(chr, range(0x1F300, 0x1F650))) + "\u200d\ufe0f\U0001F3FB",
    "combining": "".join(map(chr, range(0x0300, 0x0370))),
    "zalgo": "abcxyz" + "".join(map(chr, range(0x0300, 0x0370))),
    "devanagari": "".join(map(chr, range(0x0900, 0x0980))),
    "base64": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
    "latin": "abcdefghijklmnopqrstuvwxyz",
}
unspaced_runs = st.sampled_from(sorted(SCRIPTS.values())).flatmap(lambda alphabet: st.text(alphabet, max_size=300))
unicode_texts = st.lists(st.tuples(unspaced_runs, st.sampled_from(["", " ", "\n", ". "])), max_size=10).map(
    lambda parts: "".join(run + gap for run, gap in parts))


@pytest.fixture(scope="module")
def chunkers(tokenizer: Tokenizer) -> dict[int, Chunker]:
    """Chunkers by window size: small windows cut runs often, the model's own is what serving uses."""
    return {size: Chunker(tokenizer, size, size // 4, 256) for size in (16, 40, 254)}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=unicode_texts, size=st.sampled_from([16, 40, 254]))
def test_every_chunk_of_any_script_fits_the_window(chunkers: dict[int, Chunker], counter: Tokenizer, text: str,
                                                    size: int) -> None:
    chunker = chunkers[size]
    assert_bounded_and_covering(chunker, counter, text, chunker.split(text))


def random_text(alphabet: str, length: int, seed: int = 26) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(length))


@pytest.mark.parametrize(("text", "windows"), [
    pytest.param(("ภาษาไทยเป็นภาษาที่ไม่มีการเว้นวรรคระหว่างคำ" * 120)[:5100], 10, id="thai-5100"),
    pytest.param(random_text(KANA, 200_000), 700, id="kana-200k"),
    pytest.param(base64.b64encode(random.Random(26).randbytes(150_000)).decode(), 400, id="base64-200k"),
    pytest.param(random_text(SCRIPTS["emoji"], 200_000), 700, id="emoji-200k"),
    pytest.param("a" + "\u0301" * 199_999, 1, id="combining-marks-200k"),  # the model sees one letter
])
def test_text_without_spaces_is_cut_into_windows(tokenizer: Tokenizer, counter: Tokenizer, text: str,
                                                 windows: int) -> None:
    chunker = Chunker(tokenizer, 254, 32, 256)
    chunks = chunker.split(text)
    assert len(chunks) >= windows
    assert_bounded_and_covering(chunker, counter, text, chunks)


def test_the_encoder_sees_each_character_of_a_long_run(tokenizer: Tokenizer, counter: Tokenizer) -> None:
    run = random_text(KANA, 300)
    assert len(tokenizer.encode(run).ids) == 256  # truncated at the model's window, not one [UNK]
    assert counter.encode(run, add_special_tokens=False).tokens.count("[UNK]") < 100


def test_a_word_longer_than_the_window_is_cut_at_the_window(tokenizer: Tokenizer, counter: Tokenizer) -> None:
    text = "Kafka " + "antidisestablishmentarianism" * 3 + " streams"
    chunker = Chunker(tokenizer, 8, 2, 256)
    chunks = chunker.split(text)
    sizes = [len(counter.encode(c.text, add_special_tokens=False).ids) for c in chunks]
    assert min(sizes[:-1]) == 8 and max(sizes) <= 8, "the long word fills whole windows, never 1-token chunks"
    assert_bounded_and_covering(chunker, counter, text, chunks)


def test_text_the_model_ignores_has_no_chunks(tokenizer: Tokenizer) -> None:
    assert Chunker(tokenizer, 128, 32, 256).split("\u0301" * 50_000 + "\u200b" * 10) == []


def test_the_end_of_a_long_unspaced_document_is_found_in_dense_mode(encoder: OnnxEncoder, tmp_path: Path) -> None:
    sentence = "Pelicans migrate across the Sahara every spring to nest by the lakes."
    alphanumerics = SCRIPTS["base64"].rstrip("+/=")  # base64 punctuation would split the run into words
    unspaced = random_text(KANA, 8_000) + random_text(SCRIPTS["emoji"], 8_000) + random_text(alphanumerics, 8_000)
    store = EdgeVectorStore(tmp_path / "q", "chunks", encoder.dim)
    try:
        DocumentIndexer(store, encoder, Chunker(encoder.tokenizer, 254, 32, encoder.max_tokens)).apply([
            DocumentEvent(doc_id="unspaced", version=1, op="upsert", text=unspaced + " " + sentence),
            DocumentEvent(doc_id="kana", version=1, op="upsert", text=random_text(KANA, 3_000, seed=1)),
            DocumentEvent(doc_id="birds", version=1, op="upsert",
                          text="Swallows fly south in autumn and return to the same barn every year."),
            DocumentEvent(doc_id="desert", version=1, op="upsert",
                          text="The Sahara is the largest hot desert; its dunes move with the wind."),
        ])
        best = Searcher(encoder, store, cache_size=0).search("Where do pelicans nest after the Sahara?", 1,
                                                              mode="dense").hits[0]
        assert best.doc_id == "unspaced" and best.text.endswith(sentence)
        assert len(best.text) < 2_000, "a hit carries its chunk, not the whole document"
    finally:
        store.close()
