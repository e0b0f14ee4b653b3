"""A deterministic hashing `Encoder` (the test double of the ONNX encoder): no model files, microseconds a text.

Each word is hashed to a signed dimension, so texts that share words are near each other and identical texts
embed identically in every process. Its tokenizer is a real `tokenizers` word-level one, so chunking runs the same
code as with a model's tokenizer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from streams.state.tokenization import bound_word_length

_WORD = re.compile(r"\w+")


def word_tokenizer() -> Tokenizer:
    """Whitespace/punctuation pre-tokenization; every word maps to [UNK] (only offsets and word ids matter)."""
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0, "[PAD]": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()  # type: ignore[assignment]
    return bound_word_length(tokenizer)


class HashingEncoder:
    """Bag of hashed words, L2-normalized; `version` names the "model" as a registry version would."""

    provider = "hashing"

    def __init__(self, version: str = "v1", dim: int = 64, max_tokens: int = 256) -> None:
        self._version = version
        self._dim = dim
        self._max_tokens = max_tokens
        self._tokenizer = word_tokenizer()
        self.calls = 0  # encoder calls, so tests can see batching

    @property
    def version(self) -> str:
        return self._version

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.casefold())[: self._max_tokens]:
                digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
                index = int.from_bytes(digest[:4], "big") % self._dim
                out[row, index] += 1.0 if digest[4] & 1 else -1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
            else:
                out[row, 0] = 1.0  # no words: a fixed unit vector
        return out
