"""One contract, every `Encoder`: the ONNX Runtime encoder and the hashing double."""

from __future__ import annotations

import numpy as np
import pytest

from streams.ml.chunking import Chunker
from streams.state.encoder import Encoder, OnnxEncoder
from streams.state.hashing_encoder import HashingEncoder

TEXTS = ["a much longer sentence about stream processing and indexes", "short", "naïve café", "", "🙂 🚀"]


@pytest.fixture(params=["onnx", "hashing-double"])
def contract_encoder(request: pytest.FixtureRequest) -> Encoder:
    if request.param == "onnx":
        onnx: OnnxEncoder = request.getfixturevalue("encoder")  # the session's ONNX encoder (conftest)
        return onnx
    return HashingEncoder("v1", dim=32)


def test_vectors_are_unit_float32_rows_in_input_order(contract_encoder: Encoder) -> None:
    vectors = contract_encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), contract_encoder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    alone = np.stack([contract_encoder.encode([text])[0] for text in TEXTS])
    np.testing.assert_allclose(vectors, alone, atol=1e-5)  # batching never changes a vector
    assert contract_encoder.encode([]).shape == (0, contract_encoder.dim)


def test_similar_texts_are_nearer_than_unrelated_ones(contract_encoder: Encoder) -> None:
    tea, tea_again, bikes = contract_encoder.encode(["green tea brewing temperature", "brewing green tea temperature",
                                                     "oil the bicycle chain"])
    assert float(tea @ tea_again) > float(tea @ bikes)


def test_it_names_its_version_and_provider_and_chunks_with_its_tokenizer(contract_encoder: Encoder) -> None:
    assert contract_encoder.version and contract_encoder.provider and contract_encoder.max_tokens >= 16
    chunker = Chunker(contract_encoder.tokenizer, 16, 4, contract_encoder.max_tokens)
    text = " ".join(f"word{i}" for i in range(80))
    chunks = chunker.split(text)
    assert len(chunks) > 2 and chunks[0].text.startswith("word0") and chunks[-1].text.endswith("word79")
