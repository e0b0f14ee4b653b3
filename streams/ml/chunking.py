"""Tokenizer-aware chunking on sentence and paragraph boundaries, cut where the content says, so edits stay local.

A text is read as paragraphs (split by blank lines) of sentences (split after `.`, `!`, `?`, `…` before a space and
after the full stops of scripts that put no space after them: `。` and the fullwidth `!`, `?`; a sentence longer
than a chunk is split at its line breaks, so code, tables and lists are read line by line, while a line break
inside a shorter sentence is wrapping). A chunk is a run of whole sentences between two *boundaries*:

* a paragraph's end, unless the paragraph is shorter than a quarter of a chunk (a title, a heading, a short line
  joins what follows);
* a sentence whose content hash says so (one sentence in `boundary_every`, on average): the decision reads that
  sentence alone, never where it sits, so an edit moves no boundary but its own;
* the size cap: between two boundaries, sentences are packed into chunks of at most `size` tokens.

A chunk after the first of its paragraph is led by the last words (up
to `overlap` tokens, as room allows, never the first) of the sentence before it, the context a cut would otherwise
lose. A paragraph that fits in one chunk is one piece (no hashed boundary inside it); a short one starts a chunk
when its own hash says so (never the second: a title stays with what follows it). A sentence longer than a chunk
(text without sentence ends, unspaced scripts) is cut into windows of `size` tokens with `overlap` and is a
boundary on both sides.

So replacing a sentence changes the chunk that holds it and, when it ends a chunk, the one it leads; the chunks
after those change only when the sentences between the two boundaries around the edit no longer fit the chunks they
filled. Adding a paragraph that is not a short one changes its own chunks, and the chunk of a short paragraph just
before it (a title, a heading) that joined what followed. An edit that moves a paragraph across "fits in a chunk" or
"short", or a sentence across a chunk's size, re-cuts that paragraph.
"""

from __future__ import annotations

import hashlib
import itertools
from bisect import bisect_right
from dataclasses import dataclass

from tokenizers import Tokenizer

from streams.state.tokenization import MAX_WORD_CHARS

#: Sentence-ending punctuation followed by a space, and scripts' full stops that need none.
SPACED_ENDS = frozenset(".!?…")
UNSPACED_ENDS = frozenset("\u3002\uff01\uff1f")  # ideographic full stop, fullwidth ! and ?


@dataclass(frozen=True, slots=True)
class Chunk:
    number: int
    text: str
    start: int  # character offsets in the source text
    end: int


@dataclass(frozen=True, slots=True)
class _Sentence:
    first: int  # token range [first, last)
    last: int
    paragraph_end: bool  # the last sentence of its paragraph
    whole_paragraph: bool = False  # a paragraph that fits in one chunk, as one piece
    context: int | None = None  # where the sentence before it in its paragraph starts (its context), if any


class Chunker:
    """Splits text into chunks that the encoder sees whole (no silent truncation), on content-defined boundaries.

    `size` counts content tokens (the encoder adds [CLS]/[SEP]). Every chunk holds at most `size` tokens and at
    most `max_chars` characters (tokens span more than `MAX_WORD_CHARS` only through characters the model ignores:
    controls, zero-width and combining marks); text without a token has no chunk. Up to `overlap` tokens of
    the sentence before lead a chunk (its context), and are repeated between the windows of a sentence longer than
    a chunk; sentences are never cut otherwise.
    """

    def __init__(self, tokenizer: Tokenizer, size: int, overlap: int, max_tokens: int, boundary_every: int = 4
                 ) -> None:
        if overlap >= size:
            raise ValueError(f"overlap ({overlap}) must be smaller than size ({size})")
        if boundary_every < 1:
            raise ValueError(f"boundary_every ({boundary_every}) must be at least 1")
        self.size = min(size, max_tokens - 2)
        self.overlap = min(overlap, self.size - 1)
        self.boundary_every = boundary_every
        self.max_chars = self.size * MAX_WORD_CHARS
        self.short_paragraph = max(1, self.size // 4)
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def split(self, text: str) -> list[Chunk]:
        return self.split_many([text])[0]

    def split_many(self, texts: list[str]) -> list[list[Chunk]]:
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [self._chunks(text, enc.offsets, enc.word_ids) for text, enc in zip(texts, encodings, strict=True)]

    def _chunks(self, text: str, offsets: list[tuple[int, int]], words: list[int | None]) -> list[Chunk]:
        ranges: list[tuple[int, int, int]] = []  # (first token with context, first token, end) of each chunk
        run: list[_Sentence] = []  # sentences since the last boundary
        for number, piece in enumerate(self._pieces(text, offsets)):
            if piece.last - piece.first > self.size or self._chars(offsets, piece.first, piece.last) > self.max_chars:
                ranges += self._packed(text, offsets, words, run)
                run = []
                ranges += [(first, first, last) for first, last in self._windows(text, offsets, words, piece.first,
                                                                                 piece.last)]
                continue
            if (number >= 2 and run and piece.whole_paragraph and self._is_short(piece)  # (a title stays with what
                    and self._starts_chunk(text, offsets, piece)):                 # follows it)
                ranges += self._packed(text, offsets, words, run)
                run = []
            run.append(piece)
            if self._is_boundary(text, offsets, piece):
                ranges += self._packed(text, offsets, words, run)
                run = []
        ranges += self._packed(text, offsets, words, run)
        chunks: list[Chunk] = []
        for led, first, last in ranges:
            # the lead never reaches the start of the chunk before (after a sentence's windows, say)
            start = offsets[led if not chunks or offsets[led][0] > chunks[-1].start else first][0]
            end = min(offsets[last - 1][1], start + self.max_chars)
            chunks.append(Chunk(len(chunks), text[start:end], start, end))
        return chunks

    def _pieces(self, text: str, offsets: list[tuple[int, int]]) -> list[_Sentence]:
        """The text's sentences, a paragraph that fits in one chunk as one piece."""
        pieces: list[_Sentence] = []
        paragraph: list[_Sentence] = []
        for sentence in self._sentences(text, offsets):
            context = paragraph[-1].first if paragraph else None
            paragraph.append(_Sentence(sentence.first, sentence.last, sentence.paragraph_end, context=context))
            if sentence.paragraph_end:
                first, last = paragraph[0].first, paragraph[-1].last
                if last - first <= self.size and self._chars(offsets, first, last) <= self.max_chars:
                    pieces.append(_Sentence(first, last, paragraph_end=True, whole_paragraph=True))
                else:
                    pieces += paragraph
                paragraph = []
        return pieces

    def _sentences(self, text: str, offsets: list[tuple[int, int]]) -> list[_Sentence]:
        sentences: list[_Sentence] = []
        first, breaks = 0, []
        for token in range(1, len(offsets)):
            gap = text[offsets[token - 1][1]:offsets[token][0]]
            ender = text[offsets[token - 1][0]:offsets[token - 1][1]]
            paragraph_end = gap.count("\n") >= 2
            ends = ((ender in SPACED_ENDS and gap[:1].isspace()) or ender in UNSPACED_ENDS) and token - first >= 3
            if paragraph_end or ends:  # "1." and "Dr." (two tokens) end no sentence
                sentences += self._lines(offsets, first, token, breaks, paragraph_end)
                first, breaks = token, []
            elif "\n" in gap:
                breaks.append(token)
        if offsets:
            sentences += self._lines(offsets, first, len(offsets), breaks, paragraph_end=True)
        return sentences

    def _lines(self, offsets: list[tuple[int, int]], first: int, last: int, breaks: list[int], paragraph_end: bool
               ) -> list[_Sentence]:
        """A sentence (a line break inside it is wrapping), or its lines when it is longer than a chunk: code,
        tables and lists hold no full stops, and their lines are what an edit keeps apart."""
        if not breaks or (last - first <= self.size and self._chars(offsets, first, last) <= self.max_chars):
            return [_Sentence(first, last, paragraph_end)]
        bounds = [first, *breaks, last]
        return [_Sentence(a, b, paragraph_end and b == last) for a, b in itertools.pairwise(bounds)]

    def _is_boundary(self, text: str, offsets: list[tuple[int, int]], piece: _Sentence) -> bool:
        """Whether a chunk ends after `piece`: decided by the piece alone (its paragraph's end, or its hash)."""
        if piece.whole_paragraph:
            return not self._is_short(piece)
        if piece.paragraph_end:
            return True
        return self.ends_chunk(text[offsets[piece.first][0]:offsets[piece.last - 1][1]])

    def _is_short(self, piece: _Sentence) -> bool:
        return piece.last - piece.first < self.short_paragraph

    def _starts_chunk(self, text: str, offsets: list[tuple[int, int]], piece: _Sentence) -> bool:
        """Whether a short paragraph (a heading, a list item, a line) starts a chunk: its hash alone decides, as a
        sentence's decides whether it ends one; the others join what follows."""
        return self.ends_chunk(text[offsets[piece.first][0]:offsets[piece.last - 1][1]])

    def ends_chunk(self, sentence: str) -> bool:
        """Whether `sentence`, inside a paragraph longer than a chunk, ends a chunk (a short paragraph: starts one):
        its content hash alone decides (whitespace inside it does not count)."""
        words = " ".join(sentence.split()).encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(words, digest_size=8).digest(), "big") % self.boundary_every == 0

    def _packed(self, text: str, offsets: list[tuple[int, int]], words: list[int | None], run: list[_Sentence]
                ) -> list[tuple[int, int, int]]:
        """The sentences between two boundaries, packed in order into chunks of at most `size` tokens, each chunk
        after the first of a paragraph led by the last words (up to `overlap` tokens, as room allows) of the
        sentence before it: the context the old windows' overlap gave, read from that one sentence alone."""
        packed: list[tuple[_Sentence, int]] = []
        for sentence in run:
            if packed and sentence.last - packed[-1][0].first <= self.size and self._chars(
                    offsets, packed[-1][0].first, sentence.last) <= self.max_chars:
                packed[-1] = (packed[-1][0], sentence.last)
            else:
                packed.append((sentence, sentence.last))
        return [(self._context_start(text, offsets, words, lead, last), lead.first, last) for lead, last in packed]

    def _context_start(self, text: str, offsets: list[tuple[int, int]], words: list[int | None], lead: _Sentence,
                       last: int) -> int:
        """Where the chunk starting with `lead` starts with its context: after the first token of the sentence before
        (which decides it alone), on a word that follows a space or a punctuation mark (a piece of an unspaced run
        would re-tokenize as something else), holding a letter or digit, within `size` tokens and `max_chars`
        characters; else at `lead` itself."""
        if lead.context is None or self.overlap == 0:
            return lead.first
        start = max(lead.context + 1, lead.first - self.overlap, last - self.size)  # never the whole sentence:
        # a chunk never holds all of the one before, whatever that one's context was
        while start < lead.first and not self._begins_word(text, offsets, words, start):
            start += 1
        context = text[offsets[start][0]:offsets[lead.first][0]] if start < lead.first else ""
        if not any(char.isalnum() for char in context) or self._chars(offsets, start, last) > self.max_chars:
            return lead.first
        return start

    @staticmethod
    def _begins_word(text: str, offsets: list[tuple[int, int]], words: list[int | None], token: int) -> bool:
        if token == 0:
            return True
        if words[token] is not None and words[token] == words[token - 1]:
            return False
        before = text[offsets[token][0] - 1]
        return before.isspace() or not before.isalnum() or not text[offsets[token][0]].isalnum()

    @staticmethod
    def _chars(offsets: list[tuple[int, int]], first: int, last: int) -> int:
        return offsets[last - 1][1] - offsets[first][0]

    def _windows(self, text: str, offsets: list[tuple[int, int]], words: list[int | None], begin: int, count: int
                 ) -> list[tuple[int, int]]:
        """Tokens [begin, count) of a sentence longer than a chunk, in windows of `size` tokens with `overlap`.

        Windows end where a word starts; a word longer than the window is cut at the window, between two of its
        tokens."""
        word_starts = [i for i in range(begin, count) if i == begin or words[i] is None or words[i] != words[i - 1]]
        starts_set = set(word_starts)
        ranges: list[tuple[int, int]] = []
        start = end = begin
        while end < count:
            window_end = self._window_end(start, count, word_starts, offsets)
            if window_end <= end:  # the overlap's words reach as far as the last chunk did: go on from its end
                start = end
                window_end = self._window_end(start, count, word_starts, offsets)
            end = self._fitted_end(text, offsets, start, window_end, mid_word=start not in starts_set or (
                window_end < count and window_end not in starts_set))
            ranges.append((start, end))
            start = self._overlap_start(start, end, word_starts)
        return ranges

    def _window_end(self, start: int, count: int, word_starts: list[int], offsets: list[tuple[int, int]]) -> int:
        """Where the window from token `start` ends: at the window, or before the word the window would cut unless
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
        """`end`, moved back while the window's text holds more than `size` tokens on its own: a window cut inside a
        word re-tokenizes differently (its first piece loses the `##` of a continuation)."""
        while mid_word and end > start + 1:
            piece = text[offsets[start][0]:offsets[end - 1][1]]
            if len(self._tokenizer.encode(piece, add_special_tokens=False).ids) <= self.size:
                break
            end -= 1
        return end

    def _overlap_start(self, start: int, end: int, word_starts: list[int]) -> int:
        """Where the window after [start, end) starts: `overlap` tokens back, moved back to its word's start unless
        that word began in (or before) the last window's first token."""
        overlap_start = max(end - self.overlap, start + 1)
        word_start = word_starts[bisect_right(word_starts, overlap_start) - 1]
        return word_start if word_start > start else overlap_start
