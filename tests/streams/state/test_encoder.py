"""The ONNX encoder must give sentence-transformers' embeddings (pooling and normalization in the graph)."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest

from streams.devtools.demo import CORPUS
from streams.state.encoder import CPU, OnnxEncoder, token_batches
from streams.state.registry import ModelVersion


def varied_texts(count: int = 500) -> list[str]:
    """Short, medium, long (truncated), unicode, code-like and odd inputs."""
    rng = random.Random(7)
    corpus = [json.loads(line)["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    words = " ".join(corpus).split()
    texts = ["a", "?", "Hello world!", "naïve café — déjà vu", "東京は日本の首都です", "🙂🚀 emoji only",
             "def f(x):\n    return x ** 2", "   leading and trailing   ", "UPPER lower MiXeD", "1 2 3 4 5"]
    while len(texts) < count:
        kind = rng.random()
        if kind < 0.4:
            length = rng.randint(3, 20)
        elif kind < 0.8:
            length = rng.randint(20, 150)
        else:
            length = rng.randint(300, 600)  # past the model's 256 tokens: truncated the same way
        start = rng.randrange(len(words) - length)
        texts.append(" ".join(words[start:start + length]))
    return texts


def test_onnx_matches_sentence_transformers_on_500_varied_texts(encoder: OnnxEncoder,
                                                                base_model: ModelVersion) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = varied_texts(500)
    reference = sentence_transformers.SentenceTransformer(base_model.source, device="cpu").encode(
        texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    ours = encoder.encode(texts)
    assert ours.shape == (500, 384) and ours.dtype == np.float32
    cosine = (ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.9999, f"worst text: {texts[int(cosine.argmin())]!r} ({cosine.min()})"


def test_vectors_are_unit_length_and_order_preserving(encoder: OnnxEncoder) -> None:
    texts = ["a much longer sentence about stream processing and indexes", "short", "medium length text"]
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_token_batches_group_similar_lengths_within_both_bounds() -> None:
    lengths = [50, 7, 300, 9, 48, 8, 52, 10, 49]
    batches = token_batches(lengths, max_texts=3, max_tokens=160)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))  # each text exactly once
    assert [[lengths[i] for i in batch] for batch in batches] == [[7, 8, 9], [10, 48, 49], [50, 52], [300]]
    assert all(len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 160) for b in batches)
    assert token_batches([], 32, 1024) == []


def test_batch_bounds_do_not_change_the_vectors(base_model: ModelVersion, encoder: OnnxEncoder) -> None:
    texts = varied_texts(120)
    one_at_a_time = OnnxEncoder(base_model, batch_size=1)
    wide = OnnxEncoder(base_model, batch_size=64, batch_tokens=64 * 256)
    reference = encoder.encode(texts)
    for other in (one_at_a_time, wide):
        np.testing.assert_allclose(other.encode(texts), reference, atol=1e-5)


def test_runs_on_the_cpu_provider_without_a_gpu(encoder: OnnxEncoder) -> None:
    assert encoder.provider == CPU or encoder.provider == "CUDAExecutionProvider"


def test_serving_never_imports_torch(base_model: ModelVersion) -> None:
    import subprocess

    code = ("import sys; from pathlib import Path; from streams.state.registry import LocalModelRegistry;"
            "from streams.state.encoder import OnnxEncoder; import streams.app, streams.web.http, agents.ingest;"
            f"m = LocalModelRegistry(Path({str(base_model.path.parent.parent)!r}), 'minilm').current();"
            "OnnxEncoder(m).encode(['x']); print('torch' in sys.modules, 'sentence_transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_int8_mode_is_opt_in_and_close(base_model: ModelVersion, encoder: OnnxEncoder) -> None:
    quantized = OnnxEncoder(base_model, int8=True)
    texts = varied_texts(40)
    cosine = (quantized.encode(texts) * encoder.encode(texts)).sum(axis=1)
    assert quantized.int8 and not encoder.int8
    assert cosine.min() > 0.95
