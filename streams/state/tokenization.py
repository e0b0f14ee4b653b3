"""How text becomes model tokens: the model's tokenizer, with words too long for WordPiece cut into characters.

WordPiece turns a word longer than `max_input_chars_per_word` (100) into a single [UNK]: a whitespace-free run
(Thai, Japanese kana, base64, emoji) of any length would be one token, one chunk, and invisible to the model past
that token. `bound_word_length` adds a pre-tokenizer step that leaves every word of at most that many characters
as it is (ordinary text tokenizes exactly as before) and splits a longer one into its grapheme clusters, each at
most that many characters, so every piece is tokenized on its own. The chunker counts tokens and the encoder
embeds them with the same tokenizer, so both see the same pieces.
"""

from __future__ import annotations

import json

from tokenizers import Regex, Tokenizer, pre_tokenizers
from tokenizers.models import WordPiece

#: WordPiece's default `max_input_chars_per_word` (used for models that are not WordPiece).
MAX_WORD_CHARS = 100


def max_word_chars(tokenizer: Tokenizer) -> int:
    """The longest word (in characters) the tokenizer's model splits into pieces rather than one [UNK]."""
    model = tokenizer.model
    return int(model.max_input_chars_per_word) if isinstance(model, WordPiece) else MAX_WORD_CHARS


def long_word_patterns(limit: int) -> tuple[str, str]:
    """The two split patterns: a word of at most `limit` characters whole, a longer one by grapheme cluster; then
    any piece still longer than `limit` (a cluster of many combining marks) in runs of `limit` characters."""
    return rf"\A.{{1,{limit}}}\z|\X", rf".{{1,{limit}}}"


def bound_word_length(tokenizer: Tokenizer) -> Tokenizer:
    """Give `tokenizer` (in place, and return it) the pre-tokenizer step that cuts words longer than WordPiece
    takes into grapheme clusters; a tokenizer that already has it is left as it is."""
    whole_or_graphemes, runs = long_word_patterns(max_word_chars(tokenizer))
    current = json.loads(tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = current.get("pretokenizers", []) if current.get("type") == "Sequence" else [current]
    if any(step.get("pattern", {}).get("Regex") == whole_or_graphemes for step in steps):
        return tokenizer
    bounded = [pre_tokenizers.Split(Regex(whole_or_graphemes), behavior="isolated"),
               pre_tokenizers.Split(Regex(runs), behavior="isolated")]
    existing = tokenizer.pre_tokenizer
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(  # type: ignore[assignment]
        ([existing] if existing is not None else []) + bounded)
    return tokenizer
