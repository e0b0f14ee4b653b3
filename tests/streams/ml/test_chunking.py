from __future__ import annotations

import base64
import itertools
import random
import textwrap
from bisect import bisect_left
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
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


def test_long_text_is_cut_between_whole_sentences_led_by_the_last_words_before(tokenizer: Tokenizer) -> None:
    text = " ".join(f"Sentence {i} mentions antidisestablishmentarianism and streams." for i in range(60))
    chunker = Chunker(tokenizer, 40, 10, 256)
    chunks = chunker.split(text)
    assert len(chunks) > 5
    assert [c.number for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert len(content_tokens(tokenizer, chunk.text)) <= 40
        assert text[chunk.start:chunk.end] == chunk.text
        assert chunk.text.endswith("streams."), "a chunk ends where a sentence does"
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for before, after in itertools.pairwise(chunks):
        context = after.text.partition("Sentence ")[0]
        assert text[before.end:before.end + 1 + len("Sentence ")] == " Sentence ", "the next sentence begins anew"
        assert after.start + len(context) == before.end + 1, "whole sentences after the context"
        assert 0 < len(content_tokens(tokenizer, context)) <= 10, "the context: at most `overlap` tokens"
        assert before.text.endswith(context.strip()), "the context is the last words of the sentence before"


def test_a_short_paragraph_joins_what_follows_and_a_long_one_ends_a_chunk(tokenizer: Tokenizer) -> None:
    body = "Kafka keeps records in order within a partition. Consumers commit offsets as they go."
    text = f"A title\n\n{body}\n\n{body} Brokers replicate partitions."
    chunks = Chunker(tokenizer, 40, 10, 256).split(text)
    assert [c.text for c in chunks] == [f"A title\n\n{body}", f"{body} Brokers replicate partitions."]


def test_wrapped_prose_is_cut_as_the_same_prose_unwrapped(tokenizer: Tokenizer) -> None:
    prose = " ".join(SENTENCES[:60])
    wrapped = textwrap.fill(prose, width=60)
    chunker = Chunker(tokenizer, 64, 16, 256)
    assert "\n" in wrapped and len(chunker.split(prose)) > 5
    assert [" ".join(c.text.split()) for c in chunker.split(wrapped)] == [c.text for c in chunker.split(prose)]


def test_lines_without_full_stops_are_cut_at_line_ends(tokenizer: Tokenizer) -> None:
    code = "\n".join(f"    total_{i} = compute(offsets[{i}], window={i % 7}) + total_{i - 1}" for i in range(1, 80))
    chunks = Chunker(tokenizer, 64, 16, 256).split(code)
    assert len(chunks) > 5
    for chunk in chunks:
        assert code[chunk.end:chunk.end + 1] in ("", "\n"), "a chunk ends with its line"
    for before, after in itertools.pairwise(chunks):
        line_start = code.rfind("\n", 0, after.start) + 1
        assert after.start == line_start or line_start == code.rfind("\n", 0, before.end) + 1, (
            "a chunk starts a line, or leads with the end of the line before it (its context)")


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


WORDS = ["kafka", "stream", "record", "offset", "broker", "topic", "index", "vector", "model", "query", "answer",
         "chunk", "sentence", "paragraph", "document", "worker", "cache", "store", "ledger", "version", "edit",
         "search", "dense", "sparse", "hybrid", "fusion", "token", "window"]
_words = random.Random(25)
SENTENCES = [" ".join(_words.choices(WORDS, k=_words.randint(6, 16))).capitalize() + "." for _ in range(600)]
sentences = st.sampled_from(SENTENCES)  # drawn from a pool: 20-chunk documents stay within hypothesis' budget
long_paragraphs = st.lists(sentences, min_size=36, max_size=48)


def changed_chunks(before: list[Chunk], after: list[Chunk]) -> list[str]:
    """Texts of `after`'s chunks that `before` did not have: what an edit sends through the encoder."""
    old = {c.text for c in before}
    return [c.text for c in after if c.text not in old]


def joined(paragraphs: list[list[str]]) -> tuple[str, list[list[tuple[int, int]]]]:
    """The document of `paragraphs` (sentences joined by spaces, paragraphs by blank lines) and each sentence's span."""
    text, spans = "", []
    for paragraph in paragraphs:
        text += "\n\n" if text else ""
        spans.append([])
        for n, sentence in enumerate(paragraph):
            text += " " if n else ""
            spans[-1].append((len(text), len(text) + len(sentence)))
            text += sentence
    return text, spans


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                     HealthCheck.data_too_large])
@given(paragraphs=st.lists(long_paragraphs, min_size=5, max_size=6), where=st.floats(0.25, 0.75),
       replacement=sentences)
def test_replacing_a_sentence_changes_only_the_chunks_between_the_boundaries_around_it(
        tokenizer: Tokenizer, counter: Tokenizer, paragraphs: list[list[str]], where: float, replacement: str) -> None:
    chunker = Chunker(tokenizer, 128, 32, 256)
    p, k = [(p, i) for p, paragraph in enumerate(paragraphs) for i in range(len(paragraph))][int(where * sum(
        map(len, paragraphs)))]
    edited = [list(paragraph) for paragraph in paragraphs]
    edited[p][k] = replacement
    (old_text, _), (new_text, spans) = joined(paragraphs), joined(edited)
    before, after = chunker.split(old_text), chunker.split(new_text)
    assume(len(before) >= 20)  # a 20-chunk document, or longer
    # The run holding the edit: from the sentence after the last boundary before it to the first boundary after it
    # (the edited sentence may end a chunk now, or no longer: both sides of it are in the run).
    first = max((i + 1 for i in range(k) if chunker.ends_chunk(edited[p][i])), default=0)
    last = next((i for i in range(k + 1, len(edited[p])) if chunker.ends_chunk(edited[p][i])), len(edited[p]) - 1)
    run_start, run_end = spans[p][first][0], spans[p][last][1]
    shift = len(new_text) - len(old_text)
    assert [c.text for c in before if c.end <= run_start] == [c.text for c in after if c.end <= run_start]
    assert [c.text for c in before if c.start >= run_end - shift] == [c.text for c in after if c.start >= run_end]
    if len(counter.encode(new_text[run_start:run_end], add_special_tokens=False).ids) <= chunker.size:
        assert len(changed_chunks(before, after)) <= 2


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                     HealthCheck.data_too_large])
@given(paragraphs=st.lists(long_paragraphs, min_size=5, max_size=6), added=st.lists(sentences, min_size=3, max_size=6))
def test_adding_a_paragraph_at_the_top_changes_one_chunk(tokenizer: Tokenizer, counter: Tokenizer,
                                                         paragraphs: list[list[str]], added: list[str]) -> None:
    chunker = Chunker(tokenizer, 128, 32, 256)
    body = "\n\n".join(" ".join(paragraph) for paragraph in paragraphs)
    before, after = chunker.split(body), chunker.split(" ".join(added) + "\n\n" + body)
    assume(len(before) >= 20)
    # A paragraph that fits in a chunk and is not a short one (those join what follows: see above).
    assume(chunker.size // 4 <= len(counter.encode(" ".join(added), add_special_tokens=False).ids) <= chunker.size)
    assert [c.text for c in after] == [" ".join(added)] + [c.text for c in before]


def test_the_context_is_never_a_whole_sentence_and_list_numbers_end_no_sentence(tokenizer: Tokenizer) -> None:
    chunker = Chunker(tokenizer, 16, 4, 256, boundary_every=1)  # every sentence ends a chunk
    text = "1. Brokers keep records. Consumers commit offsets as they read them from partitions."
    chunks = chunker.split(text)
    assert [c.text for c in chunks] == ["1. Brokers keep records.",  # the lead: up to 4 tokens, from a word
                                        "keep records. Consumers commit offsets as they read them from partitions."]
    last = "Consumers commit offsets as they read them from the partitions of every topic."
    roomier = Chunker(tokenizer, 18, 4, 256, boundary_every=1)
    assert [c.text for c in roomier.split(f"Brokers fail. {last}")] == ["Brokers fail.", f"fail. {last}"]
    assert [c.text for c in roomier.split(f"Stop!! {last}")] == ["Stop!!", last], "a context holds a word"


ITEMS = [" ".join(_words.choices(WORDS, k=_words.randint(3, 6))).capitalize() for _ in range(300)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                     HealthCheck.data_too_large])
@given(items=st.lists(st.sampled_from(ITEMS), min_size=150, max_size=220), where=st.floats(0.25, 0.75),
       replacement=st.sampled_from(ITEMS))
def test_replacing_a_list_item_changes_only_the_chunks_between_the_items_that_start_chunks_around_it(
        tokenizer: Tokenizer, counter: Tokenizer, items: list[str], where: float, replacement: str) -> None:
    chunker = Chunker(tokenizer, 128, 32, 256)
    k = int(where * len(items))
    edited = [*items[:k], replacement, *items[k + 1:]]
    (old_text, _), (new_text, spans) = joined([[item] for item in items]), joined([[item] for item in edited])
    before, after = chunker.split(old_text), chunker.split(new_text)
    assume(len(before) >= 20)
    # short paragraphs (list items, headings): an item's own hash decides whether it starts a chunk
    first = max((i for i in range(1, k) if chunker.ends_chunk(edited[i])), default=0)
    last = next((i for i in range(k + 1, len(edited)) if chunker.ends_chunk(edited[i])), len(edited)) - 1
    run_start, run_end = spans[first][0][0], spans[last][0][1]
    shift = len(new_text) - len(old_text)
    assert [c.text for c in before if c.end <= run_start] == [c.text for c in after if c.end <= run_start]
    assert [c.text for c in before if c.start >= run_end - shift] == [c.text for c in after if c.start >= run_end]
    if len(counter.encode(new_text[run_start:run_end], add_special_tokens=False).ids) <= chunker.size:
        assert len(changed_chunks(before, after)) <= 2


def test_a_sentence_that_comes_to_end_a_chunk_changes_two_chunks_not_the_ones_after(tokenizer: Tokenizer) -> None:
    chunker = Chunker(tokenizer, 128, 32, 256)
    ending = [s for s in SENTENCES if chunker.ends_chunk(s)]
    going_on = [s for s in SENTENCES if not chunker.ends_chunk(s)]
    rest = " ".join(ending[:14])  # one-sentence chunks: each one's context must not depend on the chunk before
    before, after = chunker.split(f"{going_on[0]} {rest}"), chunker.split(f"{ending[20]} {rest}")
    assert len(before) >= 12
    assert len(changed_chunks(before, after)) == 2
    assert [c.text for c in before[1:]] == [c.text for c in after[2:]]  # one chunk more: the new sentence alone
