"""Text encoders: the `Encoder` protocol and its ONNX Runtime implementation (no torch)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from streams.state.registry import ModelVersion

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


class OnnxEncoder:
    """ONNX Runtime session of an exported model (pooling and normalization live in the graph).

    Uses the CUDA execution provider when onnxruntime-gpu offers it, the CPU provider otherwise.
    Texts are sorted by length and encoded in sub-batches padded to their longest member.
    """

    def __init__(self, model: ModelVersion, *, threads: int = 2, batch_size: int = 32, int8: bool = False,
                 providers: Sequence[str] | None = None, spinning: bool = True) -> None:
        """`spinning` False: ONNX Runtime's intra-op threads sleep as soon as a run ends instead of spinning for
        the next one (a second session beside the serving one must not take its cores)."""
        self.model = model
        self._tokenizer = Tokenizer.from_file(str(model.tokenizer_path))
        self._tokenizer.enable_truncation(max_length=model.max_tokens)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id("[PAD]") or 0, pad_token="[PAD]")
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
        self._session = ort.InferenceSession(str(path), options, providers=chosen)
        self.provider = self._session.get_providers()[0]
        self.int8 = int8
        self.threads = threads
        self.batch_size = batch_size if self.provider != CUDA else max(batch_size, 256)
        self._inputs = {i.name for i in self._session.get_inputs()}
        log.info("encoder %s on %s (int8=%s)", model.version, self.provider, int8)

    @property
    def version(self) -> str:
        return self.model.version

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
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            out[idx] = self._run([texts[i] for i in idx])
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (vectors,) = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
        return vectors
