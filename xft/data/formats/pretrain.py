"""Raw text for (continued) pretraining: the map function returns a document, not messages."""

from xft.data.formats import fields


def pretrain(record):
    """Raw text: {"text": "..."} → the text itself, a document trained on every token.

    Example (C4): {"text": "Beginners BBQ Class Taking Place in Missoula! ..."}
    No chat template is applied: xft.data.encode.encode_documents wraps the text in
    BOS (when the tokenizer has one) and EOS and splits over-long documents into
    max_length pieces.
    """
    return fields.text(record, "text")
