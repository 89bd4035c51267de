"""The numpy forward pass against what sentence-transformers gives for all-MiniLM-L6-v2."""

from __future__ import annotations

import math

import numpy as np
import pytest
from minilm import MAX_TOKENS, MiniLM, erf, gelu_erf, gelu_tanh

# The cosine similarities sentence-transformers' documentation prints for all-MiniLM-L6-v2
# (sbert.net: quickstart and "Semantic Textual Similarity"), four decimals.
PUBLISHED = [
    ("The new movie is awesome", "The new movie is so great", 0.8939),
    ("The cat sits outside", "The dog plays in the garden", 0.2838),
    ("I love pasta", "Do you like pizza?", 0.5096),
    ("A man is eating food.", "A man is eating a piece of bread.", 0.7553),
    ("A man is riding a horse.", "A man is riding a white horse on an enclosed ground.", 0.7369),
]


def test_erf_matches_the_standard_library() -> None:
    xs = np.linspace(-8, 8, 20_001, dtype=np.float32)
    exact = np.array([math.erf(float(x)) for x in xs])
    assert np.abs(erf(xs) - exact).max() < 1e-6
    assert erf(xs).dtype == np.float32


def test_gelu_forms() -> None:
    xs = np.linspace(-12, 12, 24_001, dtype=np.float32)
    exact = np.array([0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in xs.astype(float)])
    assert np.abs(gelu_erf(xs.copy()) - exact).max() < 2e-6
    assert np.abs(gelu_tanh(xs.copy()) - exact).max() < 5e-4


@pytest.fixture(scope="module")
def exact_model() -> MiniLM:
    return MiniLM(exact_gelu=True)


def test_the_tanh_gelu_gives_the_exact_embeddings(model: MiniLM, exact_model: MiniLM) -> None:
    texts = [t for pair in PUBLISHED for t in pair[:2]] + ["word " * 300, "Hi"]
    fast, exact = model.encode(texts), exact_model.encode(texts)
    assert np.abs(fast - exact).max() < 1e-3
    assert float((fast * exact).sum(axis=1).min()) > 0.99999


@pytest.mark.parametrize(("a", "b", "published"), PUBLISHED)
def test_similarities_are_the_published_ones(
    model: MiniLM, exact_model: MiniLM, a: str, b: str, published: float
) -> None:
    for m in (model, exact_model):
        first, second = m.encode([a, b])
        assert float(first @ second) == pytest.approx(published, abs=6e-4)


def test_paraphrase_is_closer_than_an_unrelated_text(model: MiniLM) -> None:
    how, hello, invoice = model.encode(
        ["How are you?", "Hello, how are you doing?", "Your invoice is overdue"]
    )
    assert float(how @ hello) > 0.6
    assert float(how @ invoice) < 0.3
    assert float(how @ hello) > float(how @ invoice) + 0.4


def test_embeddings_are_unit_vectors_of_384(model: MiniLM) -> None:
    vectors = model.encode(["one", "two words", "a somewhat longer sentence than the others"])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_an_embedding(model: MiniLM) -> None:
    texts = ["Hi", "The parcel tracking number shows no update since last Tuesday morning."]
    together = model.encode(texts)
    alone = np.stack([model.encode([t])[0] for t in texts])
    assert np.abs(together - alone).max() < 1e-5


def test_a_long_text_is_truncated(model: MiniLM) -> None:
    ids, _, mask = model.tokenize(["word " * 1000, "short"])
    assert ids.shape == (2, MAX_TOKENS)
    assert mask[1].sum() == 3  # [CLS] short [SEP]
    assert model.encode(["word " * 1000]).shape == (1, 384)


def test_no_text_no_embedding(model: MiniLM) -> None:
    assert model.encode([]).shape == (0, 384)
