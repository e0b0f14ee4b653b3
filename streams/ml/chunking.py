"""Tokenizer-aware chunking: windows of at most N model tokens with overlap, cut on token offsets."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from tokenizers import Tokenizer

from streams.state.tokenization import MAX_WORD_CHARS


@dataclass(frozen=True, slots=True)
class Chunk:
    number: int
    text: str
    start: int  # character offsets in the source text
    end: int


class Chunker:
    """Splits text into chunks that the encoder sees whole (no silent truncation).

    `size` counts content tokens (the encoder adds [CLS]/[SEP]); `overlap` tokens are repeated at the start of the
    next chunk so a sentence cut at a boundary is still embedded with its context. Chunks end where a word starts;
    a word longer than the window is cut at the window, between two of its tokens. Every chunk holds at most
    `size` tokens and at most `max_chars` characters (tokens span more than `MAX_WORD_CHARS` only through
    characters the model ignores: controls, zero-width and combining marks); text without a token has no chunk.
    """

    def __init__(self, tokenizer: Tokenizer, size: int, overlap: int, max_tokens: int) -> None:
        if overlap >= size:
            raise ValueError(f"overlap ({overlap}) must be smaller than size ({size})")
        self.size = min(size, max_tokens - 2)
        self.overlap = min(overlap, self.size - 1)
        self.max_chars = self.size * MAX_WORD_CHARS
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
        word_starts = [i for i in range(count) if i == 0 or words[i] is None or words[i] != words[i - 1]]
        starts_set = set(word_starts)
        chunks: list[Chunk] = []
        start = end = 0
        while end < count:
            window_end = self._window_end(start, count, word_starts, offsets)
            if window_end <= end:  # the overlap's words reach as far as the last chunk did: go on from its end
                start = end
                window_end = self._window_end(start, count, word_starts, offsets)
            end = self._fitted_end(text, offsets, start, window_end, mid_word=start not in starts_set or (
                window_end < count and window_end not in starts_set))
            start_char = offsets[start][0]
            end_char = min(offsets[end - 1][1], start_char + self.max_chars)
            chunks.append(Chunk(len(chunks), text[start_char:end_char], start_char, end_char))
            start = self._overlap_start(start, end, word_starts)
        return chunks

    def _window_end(self, start: int, count: int, word_starts: list[int], offsets: list[tuple[int, int]]) -> int:
        """Where the chunk from token `start` ends: at the window, or before the word the window would cut unless
        that word is longer than a window itself (then it is cut at the window); shortened, at token boundaries,
        while its characters exceed `max_chars`."""
        end = min(start + self.size, count)
        if end < count:
            straddling = bisect_right(word_starts, end) - 1
            word_start = word_starts[straddling]
            word_end = word_starts[straddling + 1] if straddling + 1 < len(word_starts) else count
            if start < word_start < end and word_end - word_start <= self.size:
                end = word_start
        first_char = offsets[start][0]
        while end > start + 1 and offsets[end - 1][1] - first_char > self.max_chars:
            end -= 1
        return end

    def _fitted_end(self, text: str, offsets: list[tuple[int, int]], start: int, end: int, *, mid_word: bool) -> int:
        """`end`, moved back while the chunk's text holds more than `size` tokens on its own: a chunk cut inside a
        word re-tokenizes differently (its first piece loses the `##` of a continuation)."""
        while mid_word and end > start + 1:
            piece = text[offsets[start][0]:offsets[end - 1][1]]
            if len(self._tokenizer.encode(piece, add_special_tokens=False).ids) <= self.size:
                break
            end -= 1
        return end

    def _overlap_start(self, start: int, end: int, word_starts: list[int]) -> int:
        """Where the chunk after [start, end) starts: `overlap` tokens back, moved back to its word's start unless
        that word began in (or before) the last chunk's first token."""
        overlap_start = max(end - self.overlap, start + 1)
        word_start = word_starts[bisect_right(word_starts, overlap_start) - 1]
        return word_start if word_start > start else overlap_start
