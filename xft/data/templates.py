"""Chat templates: one declarative object per prompt format, in one registry.

The same ChatTemplate object builds training labels, drives `xft chat`, and is
written into exported tokenizers as a jinja `chat_template`, so the prompt a
model is trained on is the prompt it sees at inference.

`render()` returns the whole conversation as one string plus the character
spans that carry loss (assistant content and its end-of-turn marker). The
encoder tokenizes the whole string once and maps spans to tokens, which is what
`tokenizer.apply_chat_template` does too (no seams between separately
tokenized pieces).
"""

import json
from dataclasses import dataclass
from typing import Optional, Tuple

from xft.errors import ConfigError, RecordError

CONTENT = "{content}"


@dataclass(frozen=True)
class Rendered:
    text: str
    loss_spans: Tuple[Tuple[int, int], ...]  # [start, end) character ranges that are trained


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    user: str  # e.g. '<|im_start|>user\n{content}<|im_end|>\n'
    assistant_prefix: str  # scaffolding before an answer, never trained
    assistant_suffix: str  # end-of-turn marker after an answer, trained so the model stops
    system: str = ""  # format of a system message; '' if the family has no system role
    turn_separator: str = ""  # text after assistant_suffix, not trained
    default_system: Optional[str] = None  # used when a conversation has no system message
    prefix: str = ""  # text at the very start, e.g. a BOS token
    stop_words: Tuple[str, ...] = ()  # strings that end generation in chat
    description: str = ""

    def render(self, messages, add_generation_prompt=False) -> Rendered:
        parts, spans, length = [], [], 0

        def emit(text, trained=False):
            nonlocal length
            if trained and text:
                spans.append((length, length + len(text)))
            parts.append(text)
            length += len(text)

        emit(self.prefix)
        body = messages
        system = self.default_system
        if messages and messages[0]["role"] == "system":
            system, body = messages[0]["content"], messages[1:]
        if system is not None:
            if not self.system:
                raise RecordError(f"template '{self.name}' has no system role", field="messages")
            emit(self.system.format(content=system))
        for msg in body:
            role = msg["role"]
            if role == "user":
                emit(self.user.format(content=msg["content"]))
            elif role == "assistant":
                trained = msg.get("loss") is not False
                emit(self.assistant_prefix)
                emit(msg["content"] + self.assistant_suffix, trained)
                emit(self.turn_separator)
            else:
                raise RecordError(f"template '{self.name}' cannot render role {role!r}",
                                  field="messages")
        if add_generation_prompt:
            emit(self.assistant_prefix)
        return Rendered("".join(parts), tuple(spans))

    def to_jinja(self) -> str:
        """A jinja chat_template that renders exactly what render() renders."""

        def piece(fmt, content_expr="message['content']"):
            before, _, after = fmt.partition(CONTENT)
            terms = [_lit(before)] if before else []
            terms.append(content_expr)
            if after:
                terms.append(_lit(after))
            return "{{ " + " + ".join(terms) + " }}"

        out = []
        if self.prefix:
            out.append("{{ " + _lit(self.prefix) + " }}")
        out.append("{%- if messages and messages[0]['role'] == 'system' -%}")
        out.append(piece(self.system, "messages[0]['content']") if self.system else "")
        out.append("{%- set loop_messages = messages[1:] -%}")
        out.append("{%- else -%}")
        if self.default_system is not None:
            out.append(piece(self.system, _lit(self.default_system)))
        out.append("{%- set loop_messages = messages -%}")
        out.append("{%- endif -%}")
        out.append("{%- for message in loop_messages -%}")
        out.append("{%- if message['role'] == 'user' -%}")
        out.append(piece(self.user))
        out.append("{%- elif message['role'] == 'assistant' -%}")
        answer = self.assistant_prefix + CONTENT + self.assistant_suffix + self.turn_separator
        out.append(piece(answer))
        out.append("{%- endif -%}")
        out.append("{%- endfor -%}")
        out.append("{%- if add_generation_prompt -%}")
        out.append("{{ " + _lit(self.assistant_prefix) + " }}")
        out.append("{%- endif -%}")
        return "".join(out)


def _lit(text):
    """A jinja string literal (jinja accepts JSON-style double-quoted strings)."""
    return json.dumps(text, ensure_ascii=False)


_CHATML = dict(
    system="<|im_start|>system\n{content}<|im_end|>\n",
    user="<|im_start|>user\n{content}<|im_end|>\n",
    assistant_prefix="<|im_start|>assistant\n",
    assistant_suffix="<|im_end|>",
    turn_separator="\n",
    stop_words=("<|im_end|>",),
)

TEMPLATES = {
    t.name: t
    for t in [
        ChatTemplate(name="chatml", description="ChatML without a default system prompt "
                     "(xft's tiny default model)", **_CHATML),
        ChatTemplate(name="qwen2_chat", default_system="You are a helpful assistant.",
                     description="Qwen2 / Qwen2.5 instruct (ChatML)", **_CHATML),
    ]
}


def get_template(name) -> ChatTemplate:
    if name not in TEMPLATES:
        raise ConfigError(f"unknown chat template '{name}' (known: {', '.join(sorted(TEMPLATES))})")
    return TEMPLATES[name]
