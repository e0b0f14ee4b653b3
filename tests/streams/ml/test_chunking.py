from __future__ import annotations

import itertools

import pytest
from tokenizers import Tokenizer

from streams.ml.chunking import Chunker
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
