"""Text helpers shared by the Python renderer and the jinja it writes, so both sides
produce the same characters."""

import json


def tojson(value, indent=None):
    """What the tojson filter of transformers' chat-template jinja writes."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


def jinja_literal(text):
    """A jinja string literal (jinja accepts JSON-style double-quoted strings)."""
    return json.dumps(text, ensure_ascii=False)


def jinja_raise(message):
    """A jinja statement that fails rendering with `message`."""
    return "{{ raise_exception(" + jinja_literal(message) + ") }}"
