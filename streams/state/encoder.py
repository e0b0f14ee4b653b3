"""Text encoders: the `Encoder` protocol and its ONNX Runtime implementation (no torch)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from streams.state.registry import ModelVersion
from streams.state.tokenization import bound_word_length

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class Encoder(Protocol):
    """Maps texts to L2-normalized float32 vectors of a fixed dimension."""

    #: Where it runs (an ONNX Runtime execution provider, or a double's name), shown by `/health`.
    provider: str

    @property
    def version(self) -> str:
        """The model version that produced the vectors (a registry version)."""
        ...

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer, for chunking in model tokens."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def quantized_path(model: ModelVersion) -> Path:
    """The dynamic-int8 copy of a version's ONNX model, created on first use."""
    target = model.path / "model.int8.onnx"
    if not target.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = target.with_suffix(".tmp.onnx")
        quantize_dynamic(str(model.onnx_path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        tmp.replace(target)
    return target


def token_batches(lengths: Sequence[int], max_texts: int, max_tokens: int) -> list[list[int]]:
    """Indices of texts with these token counts, in runs of similar length: sorted by count, each run at most
    `max_texts` long and at most `max_tokens` once padded to its longest member (a text longer than that runs
    alone)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    for index in order:
        current = batches[-1] if batches else None
        if current is None or len(current) >= max_texts or (len(current) + 1) * lengths[index] > max_tokens:
            batches.append([index])
        else:
            current.append(index)
    return batches


class OnnxEncoder:
    """ONNX Runtime session of an exported model (pooling and normalization live in the graph).

    Uses the CUDA execution provider when onnxruntime-gpu offers it, the CPU provider otherwise. Texts are
    tokenized once, sorted by token count and run in batches padded to their longest member, bounded in texts
    and in padded tokens: on a CPU, small batches of equal length beat large ones (padding, and activations that
    no longer fit the cache, cost more than the per-run overhead); on CUDA the bounds are raised.
    """

    def __init__(self, model: ModelVersion, *, threads: int = 2, batch_size: int = 32, batch_tokens: int = 1024,
                 int8: bool = False, providers: Sequence[str] | None = None, spinning: bool = True) -> None:
        """`spinning` False: ONNX Runtime's intra-op threads sleep as soon as a run ends instead of spinning for
        the next one (a second session beside the serving one must not take its cores)."""
        self.model = model
        self._tokenizer = bound_word_length(Tokenizer.from_file(str(model.tokenizer_path)))
        self._tokenizer.enable_truncation(max_length=model.max_tokens)
        self._tokenizer.no_padding()
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen = list(providers) if providers else (
            [CUDA, CPU] if CUDA in ort.get_available_providers() and not int8 else [CPU]
        )
        path = quantized_path(model) if int8 else model.onnx_path
        self._path = path
        self._session = ort.InferenceSession(str(path), options, providers=chosen)
        self.provider = self._session.get_providers()[0]
        self.int8 = int8
        self.threads = threads
        self.batch_size = batch_size if self.provider != CUDA else max(batch_size, 256)
        self.batch_tokens = batch_tokens if self.provider != CUDA else max(batch_tokens, 256 * model.max_tokens)
        self._inputs = {i.name for i in self._session.get_inputs()}
        log.info("encoder %s on %s (int8=%s)", model.version, self.provider, int8)

    @property
    def version(self) -> str:
        return self.model.version

    @cached_property
    def weights_digest(self) -> str:
        """What makes this encoder's vectors: the SHA-256 of the ONNX file it runs and of its tokenizer (a reindex
        copies both, byte for byte; an int8 file is another)."""
        digest = hashlib.sha256()
        for path in (self._path, self.model.tokenizer_path):
            with path.open("rb") as file:
                digest.update(hashlib.file_digest(file, "sha256").digest())
        return digest.hexdigest()

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def max_tokens(self) -> int:
        return self.model.max_tokens

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        for rows in token_batches([len(e.ids) for e in encodings], self.batch_size, self.batch_tokens):
            out[rows] = self._run([encodings[i] for i in rows])
        return out

    def _run(self, encodings: list[Encoding]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            ids[row, :length] = encoding.ids
            mask[row, :length] = 1
            types[row, :length] = encoding.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        (vectors,) = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
        return vectors
