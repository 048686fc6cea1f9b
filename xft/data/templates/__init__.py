"""Chat templates: one declarative object per prompt format, in one registry.

The same template object builds training labels, drives `xft chat`, and is
written into exported tokenizers as a jinja `chat_template`, so the prompt a
model is trained on is the prompt it sees at inference.

`render()` returns the whole conversation as one string plus the character
spans that carry loss (assistant content and its end-of-turn marker). The
encoder tokenizes the whole string once and maps spans to tokens, which is what
`tokenizer.apply_chat_template` does too (no seams between separately
tokenized pieces).

    base.py              ChatTemplate (a spec: to_jinja, bind) → BoundTemplate (render)
    families.py          the registered formats
    tool_calls.py        how replies' tool calls render, and the parser that reads them back
    tool_definitions.py  where and how tool schemas render
    thinking.py          think blocks and the rule for earlier replies' thoughts
    jinja_text.py        tojson and jinja literals shared by both renderers
    stops.py             end-of-turn ids for exported generation configs
    auto.py              'auto': the tokenizer's own chat_template
"""

from xft.data.templates.auto import AutoTemplate
from xft.data.templates.base import BoundTemplate, ChatTemplate, Rendered
from xft.data.templates.families import FAMILIES
from xft.errors import ConfigError

TEMPLATES = {t.name: t for t in [*FAMILIES, AutoTemplate()]}

__all__ = ["AutoTemplate", "BoundTemplate", "ChatTemplate", "Rendered", "TEMPLATES",
           "get_template", "template_spec"]


def template_spec(name):
    """The registered (unbound) template: it describes a format and writes its jinja, but
    cannot render; ConfigError for an unknown name."""
    if name not in TEMPLATES:
        raise ConfigError(f"unknown chat template '{name}' (known: {', '.join(sorted(TEMPLATES))})")
    return TEMPLATES[name]


def get_template(name, tokenizer, train_on="all"):
    """The named template bound to `tokenizer` (its BOS/EOS; its chat_template for 'auto').

    train_on: 'all' trains every assistant turn, 'last' only the final one (a
    message's own `loss` flag wins either way).
    """
    return template_spec(name).bind(tokenizer, train_on)
