"""The handlers on their own, loaded the way the runtime loads them (ASYA_HANDLER strings)."""

from __future__ import annotations

from pathlib import Path

from asya_cli import load_pipeline
from asya_runtime.loader import HandlerKind, load_handler

EXAMPLE = Path(__file__).resolve().parents[1]


def actors() -> dict[str, str]:
    return load_pipeline(EXAMPLE / "pipeline.yaml").actors


def test_chunk_gives_one_message_per_sentence() -> None:
    chunk = load_handler(actors()["chunk"])
    assert chunk.kind is HandlerKind.GENERATOR
    out = list(chunk.function({"text": "Hi there!  Is it done? Yes. "}))
    assert out == [
        {"chunk": 1, "text": "Hi there!"},
        {"chunk": 2, "text": "Is it done?"},
        {"chunk": 3, "text": "Yes."},
    ]


def test_embed_is_a_batch_handler_and_classify_names_the_label() -> None:
    embed = load_handler(actors()["embed"])
    classify = load_handler(actors()["classify"])
    assert embed.batch is not None
    assert embed.batch.max_size == 32
    texts = {
        "Hello there, how are you?": "greeting",
        "Your invoice #123 is overdue, please pay": "billing",
        "The app crashes with an error every time I open it": "technical support",
        "My parcel has not arrived yet, where is it?": "shipping",
    }
    payloads = [{"chunk": 1, "text": t} for t in texts]
    embedded = embed.function(payloads)
    assert [len(e["embedding"]) for e in embedded] == [384] * len(texts)
    labels = [classify.function(e)["label"] for e in embedded]
    assert labels == list(texts.values())
