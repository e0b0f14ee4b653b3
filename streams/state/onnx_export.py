"""Export a sentence-transformers model to ONNX with mean pooling and L2 normalization in the graph.

Needs the `[train]` extra (torch, sentence-transformers); serving only loads the result.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from tokenizers import Tokenizer

from streams.state.tokenization import bound_word_length

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"


def serving_tokenizer(model_dir: Path, max_tokens: int) -> Tokenizer:
    """The model's fast tokenizer, words bounded as the chunker counts them (`bound_word_length`), truncating at
    the model's max length and padding to the longest."""
    tokenizer = bound_word_length(Tokenizer.from_file(str(model_dir / "tokenizer.json")))
    tokenizer.enable_truncation(max_length=max_tokens)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tokenizer


def export_onnx(model_dir: Path, target_dir: Path) -> dict[str, object]:
    """Write `model.onnx` and `tokenizer.json` for the sentence-transformers model at `model_dir`.

    Returns the encoder facts (dimension, max tokens) for the registry manifest.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention exports to plain MatMul/Softmax that ONNX Runtime fuses; SDPA exports slower.
    model = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"})
    transformer_module = model[0]
    pooling = model[1]
    if pooling.get_config_dict().get("pooling_mode") != "mean":
        raise ValueError(f"only mean pooling is supported for export, model uses {pooling.get_config_dict()}")
    max_tokens = int(model.max_seq_length)
    dim = int(model.get_embedding_dimension())

    class PooledEncoder(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    auto_model = transformer_module.auto_model.eval()
    wrapper = PooledEncoder(auto_model).eval()
    target_dir.mkdir(parents=True, exist_ok=True)
    dummy = serving_tokenizer(model_dir, max_tokens).encode_batch(["a short one", "a somewhat longer text"])
    inputs = tuple(
        torch.tensor([getattr(enc, attr) for enc in dummy], dtype=torch.int64)
        for attr in ("ids", "attention_mask", "type_ids")
    )
    dynamic = {0: "batch", 1: "tokens"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about shape-dependent Python branches
        torch.onnx.export(
            wrapper,
            inputs,
            str(target_dir / "model.onnx"),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={**{name: dynamic for name in INPUT_NAMES}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    tokenizer = serving_tokenizer(model_dir, max_tokens)
    tokenizer.save(str(target_dir / "tokenizer.json"))
    facts = {"dim": dim, "max_tokens": max_tokens, "opset": OPSET, "pooling": "mean", "normalized": True}
    (target_dir / "encoder.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    return facts
