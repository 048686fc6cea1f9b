"""ChatTemplate: one declarative prompt format, rendered in Python and as jinja.

A template is a handful of format strings plus a few named options for the ways
model families differ (where the system prompt goes, which contents are
trimmed, whether roles must alternate, how tool calls look). `render()` builds
the training text and its loss spans; `to_jinja()` writes the same rules as a
`chat_template` for exported tokenizers. Both read the same fields, and a test
checks they agree for every registered template.

Format strings may use these placeholders (other braces are literal text):
{content}, {bos_token}, {eos_token} (the tokenizer's, see `bind`) and, in
`tool`, {tool_call_id}.
"""

import json
import re
from dataclasses import dataclass, replace
from typing import Optional, Tuple

from xft.errors import ConfigError, RecordError

PLACEHOLDER = re.compile(r"\{(content|bos_token|eos_token|tool_call_id)\}")
TRAIN_ON = ("all", "last")
SYSTEM_PLACEMENTS = ("turn", "first_user", "final_user")


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
    turn_separator: str = ""  # text after assistant_suffix, not trained
    # Format of the system prompt; '' means the family has no system role.
    system: str = ""
    # Where the formatted system prompt goes:
    #   'turn'        its own turn, before the first message
    #   'first_user'  prepended to the content of the first user message (Llama 2, Mistral v0.2)
    #   'final_user'  prepended to the content of the user message that ends the conversation,
    #                 and dropped when an assistant reply ends it (Mistral v0.3's official template)
    system_placement: str = "turn"
    default_system: Optional[str] = None  # used when a conversation has no system message
    prefix: str = ""  # text at the very start, e.g. '{bos_token}'
    # What add_generation_prompt appends; None means assistant_prefix.
    generation_prompt: Optional[str] = None
    # Appended after the last message when there is no generation prompt; trained when it
    # directly follows a trained reply (it is then the model's end of text).
    closing: str = ""
    strip_roles: Tuple[str, ...] = ()  # roles whose content the official template trims
    alternate: bool = False  # user/assistant must alternate (tool messages and calls excepted)
    # Tool results: each 'tool' message is rendered with `tool`; a run of consecutive
    # tool messages is wrapped in tool_group (open, close). '' means no tool role.
    tool: str = ""
    tool_group: Tuple[str, str] = ("", "")
    tool_calls: Optional[str] = None  # how assistant tool_calls render: a key of TOOL_CALL_STYLES
    stop_words: Tuple[str, ...] = ()  # strings that end generation in chat
    description: str = ""
    # Set by bind(): the tokenizer's special tokens and which assistant turns are trained.
    special_tokens: Tuple[Tuple[str, str], ...] = ()
    train_on: str = "all"

    def __post_init__(self):  # a misspelled option fails when the registry is built
        if self.system_placement not in SYSTEM_PLACEMENTS:
            raise ValueError(f"template '{self.name}': system_placement must be one of "
                             f"{SYSTEM_PLACEMENTS}, got {self.system_placement!r}")
        if self.tool_calls is not None and self.tool_calls not in TOOL_CALL_STYLES:
            raise ValueError(f"template '{self.name}': unknown tool_calls style "
                             f"{self.tool_calls!r}")

    # ------------------------------------------------------------------ binding

    def bind(self, tokenizer=None, train_on="all"):
        """This template with the tokenizer's BOS/EOS filled in and the train_on policy set."""
        if train_on not in TRAIN_ON:
            raise ConfigError(f"train_on must be one of {list(TRAIN_ON)}, got {train_on!r}")
        tokens = self.special_tokens
        if tokenizer is not None:
            # A tokenizer without a BOS (Qwen2, GPT-2 style) renders '{bos_token}' as ''.
            tokens = tuple((key, getattr(tokenizer, key, None) or "")
                           for key in ("bos_token", "eos_token"))
            check_stop_words(self, tokenizer)
        return replace(self, special_tokens=tokens, train_on=train_on)

    def _fill(self, fmt, content="", tool_call_id=""):
        values = dict(self.special_tokens, content=content, tool_call_id=tool_call_id)

        def value(match):
            key = match.group(1)
            if key not in values:
                raise ConfigError(f"template '{self.name}' needs the tokenizer's {key}; bind it "
                                  "with get_template(name, tokenizer)")
            return values[key]

        return PLACEHOLDER.sub(value, fmt)

    # ---------------------------------------------------------------- rendering

    def render(self, messages, add_generation_prompt=False) -> Rendered:
        parts, spans, length = [], [], 0

        def emit(text, trained=False):
            nonlocal length
            if trained and text:
                spans.append((length, length + len(text)))
            parts.append(text)
            length += len(text)

        system, body = self._split_system(messages)
        self._check_roles(body)
        last_answer = max((i for i, m in enumerate(body) if m["role"] == "assistant"), default=-1)
        trained = False  # whether the latest reply is trained
        emit(self._fill(self.prefix))
        if system is not None and self.system_placement == "turn":
            emit(self._fill(self.system, self._strip("system", system)))
        for i, msg in enumerate(body):
            role = msg["role"]
            if role == "user":
                content = msg["content"]
                merge = (self.system_placement == "first_user" and i == 0
                         or self.system_placement == "final_user" and i == len(body) - 1)
                if system is not None and merge:
                    content = self._fill(self.system, system) + content
                emit(self._fill(self.user, self._strip("user", content)))
            elif role == "assistant":
                trained = msg.get("loss")
                if trained is None:
                    trained = self.train_on == "all" or i == last_answer
                if msg.get("tool_calls"):
                    self._emit_tool_calls(msg, emit, trained)
                else:
                    emit(self._fill(self.assistant_prefix))
                    content = self._strip("assistant", msg["content"])
                    emit(content + self._fill(self.assistant_suffix), trained)
                    emit(self._fill(self.turn_separator))
            elif role == "tool":
                if i == 0 or body[i - 1]["role"] != "tool":
                    emit(self.tool_group[0])
                emit(self._fill(self.tool, msg["content"], _tool_call_id(msg, self)))
                if i == len(body) - 1 or body[i + 1]["role"] != "tool":
                    emit(self.tool_group[1])
        if add_generation_prompt:
            emit(self._fill(self._generation_prompt()))
        else:
            ends_with_reply = last_answer == len(body) - 1
            emit(self._fill(self.closing), trained=trained and ends_with_reply)
        return Rendered("".join(parts), tuple(spans))

    def _generation_prompt(self):
        return self.assistant_prefix if self.generation_prompt is None else self.generation_prompt

    def _split_system(self, messages):
        if messages and messages[0]["role"] == "system":
            system, body = messages[0]["content"], messages[1:]
        else:
            system, body = self.default_system, messages
        if system is not None and not self.system:
            raise RecordError(f"template '{self.name}' has no system role", field="messages")
        return system, body

    def _check_roles(self, body):
        expected = "user"
        for i, msg in enumerate(body):
            role = msg["role"]
            if role == "tool" and not self.tool or msg.get("tool_calls") and not self.tool_calls:
                what = "tool results" if role == "tool" else "assistant tool_calls"
                raise RecordError(f"template '{self.name}' cannot render {what}",
                                  field=f"messages[{i}]")
            if msg.get("tool_calls"):
                _check_tool_calls(msg["tool_calls"], f"messages[{i}].tool_calls")
            if role not in ("user", "assistant", "tool"):
                raise RecordError(f"template '{self.name}' cannot render role {role!r}",
                                  field=f"messages[{i}].role")
            if self.alternate and role != "tool" and not msg.get("tool_calls"):
                if role != expected:
                    raise RecordError(f"template '{self.name}' needs user and assistant "
                                      "messages to alternate, starting with user",
                                      field=f"messages[{i}].role")
                expected = "assistant" if role == "user" else "user"

    def _strip(self, role, content):
        return content.strip() if role in self.strip_roles else content

    def _emit_tool_calls(self, msg, emit, trained):
        style = TOOL_CALL_STYLES[self.tool_calls]
        emit(self._fill(style.prefix))
        emit(style.render(self, msg) + self._fill(style.suffix), trained)
        emit(self._fill(style.separator))

    # -------------------------------------------------------------------- jinja

    def to_jinja(self) -> str:
        """A jinja chat_template that renders exactly what render() renders."""
        default = "none" if self.default_system is None else _lit(self.default_system)
        out = [self._expr(self.prefix)]
        out.append("{%- if messages and messages[0]['role'] == 'system' -%}"
                   "{%- set system = messages[0]['content'] -%}"
                   "{%- set loop_messages = messages[1:] -%}{%- else -%}"
                   f"{{%- set system = {default} -%}}"
                   "{%- set loop_messages = messages -%}{%- endif -%}")
        if not self.system:
            out.append("{%- if system is not none -%}"
                       + _raise(f"template {self.name} has no system role") + "{%- endif -%}")
        elif self.system_placement == "turn":
            out.append("{%- if system is not none -%}"
                       + self._expr(self.system, self._trimmed("system", "system"))
                       + "{%- endif -%}")
        if self.alternate:
            out.append("{%- set ns = namespace(expected='user') -%}"
                       "{%- for message in loop_messages -%}"
                       "{%- if message['role'] != 'tool' and not message.tool_calls -%}"
                       "{%- if message['role'] != ns.expected -%}"
                       + _raise("roles must alternate user/assistant") + "{%- endif -%}"
                       "{%- set ns.expected = 'assistant' if message['role'] == 'user' "
                       "else 'user' -%}"
                       "{%- endif -%}{%- endfor -%}")
        out.append("{%- for message in loop_messages -%}")
        out.append("{%- if message['role'] == 'user' -%}")
        merge = {"first_user": "loop.first", "final_user": "loop.last"}.get(self.system_placement)
        if merge and self.system:
            merged = f"({self._expr(self.system, 'system', bare=True)} + message['content'])"
            out.append(f"{{%- if {merge} and system is not none -%}}"
                       + self._expr(self.user, self._trimmed("user", merged))
                       + "{%- else -%}"
                       + self._expr(self.user, self._trimmed("user", "message['content']"))
                       + "{%- endif -%}")
        else:
            out.append(self._expr(self.user, self._trimmed("user", "message['content']")))
        out.append("{%- elif message['role'] == 'assistant' -%}")
        if self.tool_calls:
            style = TOOL_CALL_STYLES[self.tool_calls]
            out.append("{%- if message.tool_calls -%}" + self._expr(style.prefix)
                       + style.jinja + self._expr(style.suffix + style.separator) + "{%- else -%}")
        out.append(self._expr(self.assistant_prefix + "{content}" + self.assistant_suffix
                              + self.turn_separator,
                              self._trimmed("assistant", "message['content']")))
        if self.tool_calls:
            out.append("{%- endif -%}")
        if self.tool:
            out.append("{%- elif message['role'] == 'tool' -%}")
            out.append("{%- if loop.first or loop.previtem['role'] != 'tool' -%}"
                       + self._expr(self.tool_group[0]) + "{%- endif -%}")
            out.append(self._expr(self.tool, "message['content']"))
            out.append("{%- if loop.last or loop.nextitem['role'] != 'tool' -%}"
                       + self._expr(self.tool_group[1]) + "{%- endif -%}")
        out.append("{%- else -%}" + _raise(f"template {self.name} cannot render this role")
                   + "{%- endif -%}{%- endfor -%}")
        out.append("{%- if add_generation_prompt -%}" + self._expr(self._generation_prompt())
                   + "{%- else -%}" + self._expr(self.closing) + "{%- endif -%}")
        return "".join(out)

    def _trimmed(self, role, expr):
        return f"({expr} | trim)" if role in self.strip_roles else expr

    def _expr(self, fmt, content="message['content']", bare=False):
        """`fmt` as a jinja expression: literals and placeholders joined with '+'."""
        variables = {"content": content, "bos_token": "(bos_token or '')", "eos_token": "eos_token",
                     "tool_call_id": "message['tool_call_id']"}
        terms, pos = [], 0
        for match in PLACEHOLDER.finditer(fmt):
            if match.start() > pos:
                terms.append(_lit(fmt[pos:match.start()]))
            terms.append(variables[match.group(1)])
            pos = match.end()
        if pos < len(fmt):
            terms.append(_lit(fmt[pos:]))
        if bare:
            return "(" + " + ".join(terms or ['""']) + ")"
        return "{{ " + " + ".join(terms) + " }}" if terms else ""


@dataclass(frozen=True)
class ToolCallStyle:
    """How an assistant message with tool_calls renders (all of it is the trained reply)."""

    prefix: str  # scaffolding before the reply
    suffix: str  # end-of-turn marker after the calls (trained)
    separator: str  # untrained text after the turn
    render: object  # (template, message) -> the calls as text
    jinja: str  # the same as a jinja snippet (message in scope)


def _qwen_calls(template, msg):
    calls = "".join('\n<tool_call>\n{"name": "' + call["function"]["name"] + '", "arguments": '
                    + _tojson(call["function"]["arguments"]) + "}\n</tool_call>"
                    for call in msg["tool_calls"])
    return msg["content"] + calls if msg["content"] else calls[1:]


_QWEN_CALLS_JINJA = (
    "{%- set ns = namespace(calls='') -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- set ns.calls = ns.calls + '\\n<tool_call>\\n{\"name\": \"' + call.function.name"
    " + '\", \"arguments\": ' + (call.function.arguments | tojson) + '}\\n</tool_call>' -%}"
    "{%- endfor -%}"
    "{{ message['content'] + ns.calls if message['content'] else ns.calls[1:] }}")


def _mistral_calls(template, msg):
    items = []
    for i, call in enumerate(msg["tool_calls"]):
        call_id = call.get("id")
        if not isinstance(call_id, str) or len(call_id) != 9:
            raise RecordError("Mistral tool call ids must be 9-character strings",
                              field=f"tool_calls[{i}].id")
        items.append(_tojson(call["function"])[:-1] + ', "id": "' + call_id + '"}')
    return "[TOOL_CALLS] [" + ", ".join(items) + "]"


_MISTRAL_CALLS_JINJA = (
    "{{ '[TOOL_CALLS] [' }}"
    "{%- for call in message.tool_calls -%}"
    "{{ (call.function | tojson)[:-1] + ', \"id\": \"' + call.id + '\"}' }}"
    "{%- if not loop.last -%}{{ ', ' }}{%- endif -%}"
    "{%- endfor -%}{{ ']' }}")

TOOL_CALL_STYLES = {
    # Qwen2.5 / ChatML: calls follow the content inside the assistant turn.
    "qwen": ToolCallStyle("<|im_start|>assistant\n", "<|im_end|>", "\n", _qwen_calls,
                          _QWEN_CALLS_JINJA),
    # Mistral v0.3: the reply is only the calls, closed by EOS.
    "mistral": ToolCallStyle("", "{eos_token}", "", _mistral_calls, _MISTRAL_CALLS_JINJA),
}


def _check_tool_calls(calls, where):
    if not isinstance(calls, list):
        raise RecordError("must be a list", field=where)
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(function, dict) and isinstance(function.get("name"), str)
                and "arguments" in function):
            raise RecordError("must be {'function': {'name': ..., 'arguments': ...}}",
                              field=f"{where}[{j}]")


def _tool_call_id(msg, template):
    if "{tool_call_id}" not in template.tool:
        return ""
    call_id = msg.get("tool_call_id")
    if not isinstance(call_id, str) or len(call_id) != 9:
        raise RecordError(f"template '{template.name}' needs a 9-character tool_call_id on "
                          "tool messages", field="tool_call_id")
    return call_id


def check_stop_words(template, tokenizer):
    """Each stop word must be one token, or the model cannot learn (or be told) to stop."""
    for word in template.stop_words:
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"template '{template.name}' ends turns with '{word}', but the "
                              f"tokenizer splits it into {len(ids)} tokens; load a tokenizer "
                              "that defines it as a special token (see docs/templates.md)")


def _tojson(value):
    """What the tojson filter of transformers' chat-template jinja writes."""
    return json.dumps(value, ensure_ascii=False)


def _raise(message):
    return "{{ raise_exception(" + _lit(message) + ") }}"


def _lit(text):
    """A jinja string literal (jinja accepts JSON-style double-quoted strings)."""
    return json.dumps(text, ensure_ascii=False)
