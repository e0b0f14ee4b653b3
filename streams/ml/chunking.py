"""Tokenizer-aware chunking: windows of at most N model tokens with overlap, cut on token offsets."""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer


@dataclass(frozen=True, slots=True)
class Chunk:
    number: int
    text: str
    start: int  # character offsets in the source text
    end: int


class Chunker:
    """Splits text into chunks that the encoder sees whole (no silent truncation).

    `size` counts content tokens (the encoder adds [CLS]/[SEP]); `overlap` tokens are repeated at the
    start of the next chunk so a sentence cut at a boundary is still embedded with its context.
    """

    def __init__(self, tokenizer: Tokenizer, size: int, overlap: int, max_tokens: int) -> None:
        if overlap >= size:
            raise ValueError(f"overlap ({overlap}) must be smaller than size ({size})")
        self.size = min(size, max_tokens - 2)
        self.overlap = min(overlap, self.size - 1)
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def split(self, text: str) -> list[Chunk]:
        return self.split_many([text])[0]

    def split_many(self, texts: list[str]) -> list[list[Chunk]]:
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [self._windows(text, enc.offsets, enc.word_ids) for text, enc in zip(texts, encodings, strict=True)]

    def _windows(self, text: str, offsets: list[tuple[int, int]], words: list[int | None]) -> list[Chunk]:
        count = len(offsets)
        if count <= self.size:
            stripped = text.strip()
            return [Chunk(0, stripped, 0, len(text))] if stripped else []

        def word_start(token: int) -> bool:
            return token in (0, count) or words[token] is None or words[token] != words[token - 1]

        chunks: list[Chunk] = []
        start = 0
        while True:
            end = min(start + self.size, count)
            while end < count and end > start + 1 and not word_start(end):
                end -= 1  # never split a word across chunks
            start_char, end_char = offsets[start][0], offsets[end - 1][1]
            chunks.append(Chunk(len(chunks), text[start_char:end_char], start_char, end_char))
            if end == count:
                return chunks
            next_start = max(end - self.overlap, start + 1)
            while next_start > start + 1 and not word_start(next_start):
                next_start -= 1
            start = next_start
