"""ChatTemplate: one declarative prompt format, rendered in Python and as jinja.

A template is a handful of format strings plus a few named options for the ways
model families differ (where the system prompt goes, which contents are
trimmed, whether roles must alternate, where tool definitions go and how tool
calls look). A ChatTemplate is a spec: `bind(tokenizer, train_on)` returns
the BoundTemplate whose `render()` builds the training text and its loss spans
(only a bound template can render, so '{bos_token}' is never rendered without
the tokenizer's BOS). `to_jinja()` writes the same rules as a `chat_template`
for exported tokenizers. Both read the same fields, and a test checks they agree for every
registered template.

Format strings may use these placeholders (other braces are literal text):
{content}, {bos_token}, {eos_token} (the tokenizer's, see `bind`) and, in
`tool`, {tool_call_id} and {content_json} (the content as a JSON string literal).
Tool-call styles live in tool_calls.py, tool-definition styles in tool_definitions.py,
the thinking rule in thinking.py.
"""

import re
from dataclasses import dataclass, field, fields
from typing import Optional, Tuple

from xft.data.templates.jinja_text import jinja_literal, jinja_raise, tojson
from xft.data.templates.thinking import emit_thinking_reply, parse_thoughts, thinking_reply_jinja
from xft.data.templates.tool_calls import TOOL_CALL_STYLES, check_tool_calls, parse_tool_calls
from xft.data.templates.tool_definitions import TOOL_DEFINITION_STYLES, check_tools
from xft.errors import ConfigError, RecordError

PLACEHOLDER = re.compile(r"\{(content|content_json|bos_token|eos_token|tool_call_id)\}")
TRAIN_ON = ("all", "last")
SYSTEM_PLACEMENTS = ("turn", "first_user", "final_user")
FIRST_USER_NEEDED = ("tool definitions go into the first user message: the conversation must "
                     "start with one")


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
    # With 'first_user' / 'final_user' and 'user' in strip_roles: whether the user's content is
    # trimmed before the system prompt is prepended (Gemma 3: only the user's text is trimmed)
    # or the merged text is trimmed (Llama 2).
    trim_user_before_merge: bool = False
    default_system: Optional[str] = None  # used when a conversation has no system message
    prefix: str = ""  # text at the very start, e.g. '{bos_token}'
    # What add_generation_prompt appends; None means assistant_prefix.
    generation_prompt: Optional[str] = None
    # Appended after the last message when there is no generation prompt; trained when it
    # directly follows a trained reply (it is then the model's end of text).
    closing: str = ""
    # The start of `user` that also ends the reply before it: trained when it follows a trained
    # reply (GLM-4's '<|user|>', which its own fine-tuning script trains as a reply's end).
    user_opening_ends_reply: str = ""
    # The same for `tool`: GLM-4's '<|observation|>', which ends the calls before it.
    tool_opening_ends_reply: str = ""
    strip_roles: Tuple[str, ...] = ()  # roles whose content the official template trims
    alternate: bool = False  # user/assistant must alternate (tool messages and calls excepted)
    # Tool results: each 'tool' message is rendered with `tool`; a run of consecutive
    # tool messages is wrapped in tool_group (open, close). '' means no tool role.
    tool: str = ""
    tool_group: Tuple[str, str] = ("", "")
    tool_calls: Optional[str] = None  # how assistant tool_calls render: a key of TOOL_CALL_STYLES
    # Where and how the tool definitions (the system message's `tools`) render: a key of
    # TOOL_DEFINITION_STYLES. They are prompt text, never trained.
    tool_definitions: Optional[str] = None
    # Format of the system turn when tool definitions are rendered; '' means `system`
    # (Llama 3.1 adds 'Environment: ipython' to its header then).
    tools_system: str = ""
    # Format of an assistant message's reasoning_content, rendered before assistant_prefix and
    # trained (the model writes its thoughts); '' means the family does not render reasoning.
    reasoning: str = ""
    # Thinking models (Qwen3, DeepSeek-R1): (opening, closing) of the think block a reply's
    # thoughts render in, and whether earlier replies keep them ('drop' as the official
    # templates, or 'keep'); see thinking.py.
    think: Tuple[str, ...] = ()
    think_history: str = "drop"
    stop_words: Tuple[str, ...] = ()  # end-of-turn tokens: end generation in chat
    # Text that ends generation in chat, matched on the decoded text, so it may be several
    # tokens (bind() requires each stop word to be one token; these it does not).
    stop_strings: Tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self):  # a misspelled option fails when the registry is built
        if not self.user.startswith(self.user_opening_ends_reply):
            raise ValueError(f"template '{self.name}': user_opening_ends_reply must start user")
        if not self.tool.startswith(self.tool_opening_ends_reply):
            raise ValueError(f"template '{self.name}': tool_opening_ends_reply must start tool")
        if self.think_history not in ("drop", "keep"):
            raise ValueError(f"template '{self.name}': think_history must be 'drop' or 'keep'")
        if self.system_placement not in SYSTEM_PLACEMENTS:
            raise ValueError(f"template '{self.name}': system_placement must be one of "
                             f"{SYSTEM_PLACEMENTS}, got {self.system_placement!r}")
        if self.tool_calls is not None and self.tool_calls not in TOOL_CALL_STYLES:
            raise ValueError(f"template '{self.name}': unknown tool_calls style "
                             f"{self.tool_calls!r}")
        style = TOOL_DEFINITION_STYLES.get(self.tool_definitions)
        if self.tool_definitions is not None and style is None:
            raise ValueError(f"template '{self.name}': unknown tool_definitions style "
                             f"{self.tool_definitions!r}")
        if style and style.placement == "system" and not self.system:
            raise ValueError(f"template '{self.name}': tool definitions that go into the system "
                             "prompt need a system role")

    # ------------------------------------------------------------------ binding

    def bind(self, tokenizer, train_on="all"):
        """A BoundTemplate: this format with the tokenizer's BOS/EOS filled in and the
        train_on policy set ('all': every assistant turn is trained, 'last': the final one;
        a message's own `loss` flag wins either way)."""
        if train_on not in TRAIN_ON:
            raise ConfigError(f"train_on must be one of {list(TRAIN_ON)}, got {train_on!r}")
        # A tokenizer without a BOS (Qwen2, GPT-2 style) renders '{bos_token}' as ''.
        tokens = tuple((key, getattr(tokenizer, key, None) or "")
                       for key in ("bos_token", "eos_token"))
        check_stop_words(self, tokenizer)
        spec = {f.name: getattr(self, f.name) for f in fields(ChatTemplate)}
        return BoundTemplate(**spec, special_tokens=tokens, train_on=train_on)

    def _written_prefix(self):
        """The part of assistant_prefix beyond the generation prompt (the space of
        'Assistant: ' after a prompt 'Assistant:', GLM's line break after '<|assistant|>'):
        the model writes it. A format string (a spec can parse replies too)."""
        prefix, prompt = self.assistant_prefix, self._generation_prompt()
        return prefix[len(prompt):] if prefix.startswith(prompt) else ""

    def _emit_prefix(self, emit, trained):
        """assistant_prefix; the part the model writes is trained."""
        written = self._written_prefix()
        emit(self._fill(self.assistant_prefix[:len(self.assistant_prefix) - len(written)]))
        emit(self._fill(written), trained)

    def parse_reply(self, text):
        """The assistant message a generated reply stands for: thoughts (thinking
        templates) and tool calls (styles that can parse them) taken back out of the text,
        and without the end of assistant_prefix the model wrote (the template writes it
        again when the message is rendered in the history)."""
        rest = text.removeprefix(self._written_prefix())
        msg = {"role": "assistant", "content": rest}
        thoughts = None
        if self.think:
            thoughts, msg["content"] = parse_thoughts(self, rest)
        if thoughts is not None:
            msg["reasoning_content"] = thoughts
        # A reply that opens with the rest of assistant_prefix is an answer, not calls: GLM-4
        # writes a call's function name where a plain reply's line break goes.
        parsed = rest == text and parse_tool_calls(self.tool_calls, msg["content"])
        if parsed:
            msg["content"], msg["tool_calls"] = parsed
        return msg

    def _generation_prompt(self):
        return self.assistant_prefix if self.generation_prompt is None else self.generation_prompt

    def _split_system(self, messages):
        """(system prompt, tool definitions to render, the other messages).

        A system message whose content is None (a record with tools but no system
        prompt) stands for the default system prompt, like a missing one.
        """
        system, tools, body = None, None, messages
        if messages and messages[0]["role"] == "system":
            system, tools, body = messages[0]["content"], messages[0].get("tools"), messages[1:]
        if system is None:
            system = self.default_system
        if system is not None and not self.system:
            raise RecordError(f"template '{self.name}' has no system role", field="messages")
        if not (tools and self.tool_definitions):
            return system, None, body  # unrendered tools are caught by check_rendered
        check_tools(tools, "messages[0].tools")
        if (TOOL_DEFINITION_STYLES[self.tool_definitions].placement == "first_user"
                and not (body and body[0]["role"] == "user")):
            raise RecordError(FIRST_USER_NEEDED, field="messages")
        return system, tools, body

    def _check_roles(self, body):
        expected = "user"
        for i, msg in enumerate(body):
            role = msg["role"]
            if role == "tool" and not self.tool or msg.get("tool_calls") and not self.tool_calls:
                what = "tool results" if role == "tool" else "assistant tool_calls"
                raise RecordError(f"template '{self.name}' cannot render {what}",
                                  field=f"messages[{i}]")
            if msg.get("tool_calls"):
                check_tool_calls(msg["tool_calls"], f"messages[{i}].tool_calls")
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
        out = [self._expr(self.prefix)]
        out.append("{%- set system = none -%}{%- set loop_messages = messages -%}"
                   "{%- if messages and messages[0]['role'] == 'system' -%}"
                   "{%- set system = messages[0]['content'] | default(none) -%}"
                   "{%- set loop_messages = messages[1:] -%}{%- endif -%}")
        # A system message without content (apply_chat_template drops a None content) stands
        # for the default system prompt, as in render().
        if self.default_system is not None:
            out.append("{%- if system is none -%}{%- set system = "
                       + jinja_literal(self.default_system) + " -%}{%- endif -%}")
        tools_style = TOOL_DEFINITION_STYLES.get(self.tool_definitions)
        if tools_style:
            out.append(self._tools_jinja(tools_style))
        if tools_style and tools_style.placement == "system_turn":
            out.append("{%- if tool_defs -%}{{ tools_text }}{%- endif -%}")
        if not self.system:
            out.append("{%- if system is not none -%}"
                       + jinja_raise(f"template {self.name} has no system role") + "{%- endif -%}")
        elif self.system_placement == "turn":
            system_turn = self._expr(self.system, self._trimmed("system", "system"))
            if self.tools_system and tools_style:
                system_turn = ("{%- if tool_defs -%}"
                               + self._expr(self.tools_system, self._trimmed("system", "system"))
                               + "{%- else -%}" + system_turn + "{%- endif -%}")
            out.append("{%- if system is not none -%}" + system_turn + "{%- endif -%}")
        if self.alternate:
            out.append("{%- set ns = namespace(expected='user') -%}"
                       "{%- for message in loop_messages -%}"
                       "{%- if message['role'] != 'tool' and not message.tool_calls -%}"
                       "{%- if message['role'] != ns.expected -%}"
                       + jinja_raise("roles must alternate user/assistant") + "{%- endif -%}"
                       "{%- set ns.expected = 'assistant' if message['role'] == 'user' "
                       "else 'user' -%}"
                       "{%- endif -%}{%- endfor -%}")
        out.append("{%- for message in loop_messages -%}")
        out.append("{%- if message['role'] == 'user' -%}")
        if tools_style and tools_style.placement == "last_user":
            out.append("{%- if tool_defs and loop.index0 == last_user.index -%}{{ tools_text }}"
                       "{%- endif -%}")
        merge = {"first_user": "loop.first", "final_user": "loop.last"}.get(self.system_placement)
        if merge and self.system:
            system_expr = self._expr(self.system, "system", bare=True)
            content = "message['content']"
            if self.trim_user_before_merge:
                merged = f"({system_expr} + {self._trimmed('user', content)})"
            else:
                merged = self._trimmed("user", f"({system_expr} + {content})")
            out.append(f"{{%- if {merge} and system is not none -%}}"
                       + self._expr(self.user, merged)
                       + "{%- else -%}"
                       + self._expr(self.user, self._trimmed("user", content))
                       + "{%- endif -%}")
        elif tools_style and tools_style.placement == "first_user":
            out.append("{%- if tool_defs and loop.first -%}"
                       + self._expr(self.user, "(tools_text + "
                                    + self._trimmed("user", "message['content']") + ")")
                       + "{%- else -%}"
                       + self._expr(self.user, self._trimmed("user", "message['content']"))
                       + "{%- endif -%}")
        else:
            out.append(self._expr(self.user, self._trimmed("user", "message['content']")))
        out.append("{%- elif message['role'] == 'assistant' -%}")
        if self.think:
            out.append(thinking_reply_jinja(self))
        elif self.tool_calls:
            style = TOOL_CALL_STYLES[self.tool_calls]
            out.append("{%- if message.tool_calls -%}" + self._expr(style.prefix)
                       + style.jinja + self._expr(style.suffix + style.separator) + "{%- else -%}")
        if self.reasoning and not self.think:
            out.append("{%- if message.reasoning_content -%}"
                       + self._expr(self.reasoning, "message.reasoning_content")
                       + "{%- endif -%}")
        if not self.think:
            out.append(self._expr(self.assistant_prefix + "{content}" + self.assistant_suffix
                                  + self.turn_separator,
                                  self._trimmed("assistant", "message['content']")))
        if self.tool_calls and not self.think:
            out.append("{%- endif -%}")
        if self.tool:
            out.append("{%- elif message['role'] == 'tool' -%}")
            out.append("{%- if loop.first or loop.previtem['role'] != 'tool' -%}"
                       + self._expr(self.tool_group[0]) + "{%- endif -%}")
            out.append(self._expr(self.tool, "message['content']"))
            out.append("{%- if loop.last or loop.nextitem['role'] != 'tool' -%}"
                       + self._expr(self.tool_group[1]) + "{%- endif -%}")
        out.append("{%- else -%}" + jinja_raise(f"template {self.name} cannot render this role")
                   + "{%- endif -%}{%- endfor -%}")
        no_thinking = ("{%- if enable_thinking is defined and enable_thinking is false -%}"
                       + self._expr(self.think[0] + self.think[1]) + "{%- endif -%}"
                       ) if self.think else ""
        out.append("{%- if add_generation_prompt -%}" + self._expr(self._generation_prompt())
                   + no_thinking + "{%- else -%}" + self._expr(self.closing) + "{%- endif -%}")
        return "".join(out)

    @staticmethod
    def _tools_jinja(style):
        """Sets `tool_defs` (apply_chat_template's `tools=`, else the system message's `tools`)
        and, when there are any, `tools_text`; for placement 'system' appends it to `system`,
        for 'last_user' finds the last user message (`last_user.index`)."""
        out = ["{%- if tools is defined and tools -%}{%- set tool_defs = tools -%}"
               "{%- elif messages and messages[0]['role'] == 'system' -%}"
               "{%- set tool_defs = messages[0].tools -%}"
               "{%- else -%}{%- set tool_defs = none -%}{%- endif -%}"
               "{%- if tool_defs -%}" + style.jinja + "{%- endif -%}"]
        if style.placement == "system":
            out.append("{%- if tool_defs -%}{%- set system = ('' if system is none else system + "
                       + jinja_literal(style.joiner) + ") + tools_text -%}{%- endif -%}")
        elif style.placement == "first_user":
            out.append("{%- if tool_defs and not (loop_messages and loop_messages[0]['role'] == "
                       "'user') -%}" + jinja_raise(FIRST_USER_NEEDED) + "{%- endif -%}")
        elif style.placement == "last_user":  # ('system_turn': written by to_jinja)
            out.append("{%- set last_user = namespace(index=-1) -%}"
                       "{%- for message in loop_messages -%}{%- if message['role'] == 'user' -%}"
                       "{%- set last_user.index = loop.index0 -%}{%- endif -%}{%- endfor -%}")
        return "".join(out)

    def _trimmed(self, role, expr):
        return f"({expr} | trim)" if role in self.strip_roles else expr

    def _expr(self, fmt, content="message['content']", bare=False):
        """`fmt` as a jinja expression: literals and placeholders joined with '+'."""
        variables = {"content": content, "content_json": f"({content} | tojson)",
                     "bos_token": "(bos_token or '')", "eos_token": "eos_token",
                     "tool_call_id": "message['tool_call_id']"}
        terms, pos = [], 0
        for match in PLACEHOLDER.finditer(fmt):
            if match.start() > pos:
                terms.append(jinja_literal(fmt[pos:match.start()]))
            terms.append(variables[match.group(1)])
            pos = match.end()
        if pos < len(fmt):
            terms.append(jinja_literal(fmt[pos:]))
        if bare:
            return "(" + " + ".join(terms or ['""']) + ")"
        return "{{ " + " + ".join(terms) + " }}" if terms else ""


@dataclass(frozen=True)
class BoundTemplate(ChatTemplate):
    """A ChatTemplate bound to a tokenizer (its BOS/EOS) and a train_on policy: the only
    kind of template that renders. Made by `ChatTemplate.bind`; the registry holds
    unbound specs, so a template that would render `{bos_token}` as nothing cannot exist.
    (The spec's other helpers run only from `render`, on a bound template.)"""

    special_tokens: Tuple[Tuple[str, str], ...] = field(kw_only=True)
    train_on: str = field(kw_only=True)

    def _fill(self, fmt, content="", tool_call_id=""):
        values = dict(self.special_tokens, content=content, content_json=tojson(content),
                      tool_call_id=tool_call_id)
        return PLACEHOLDER.sub(lambda match: values[match.group(1)], fmt)

    def render(self, messages, add_generation_prompt=False) -> Rendered:
        parts, spans, length = [], [], 0

        def emit(text, trained=False):
            nonlocal length
            if trained and text:
                spans.append((length, length + len(text)))
            parts.append(text)
            length += len(text)

        system, tools, body = self._split_system(messages)
        self._check_roles(body)
        last_answer = max((i for i, m in enumerate(body) if m["role"] == "assistant"), default=-1)
        last_user = max((i for i, m in enumerate(body) if m["role"] == "user"), default=-1)
        tools_style = TOOL_DEFINITION_STYLES[self.tool_definitions] if tools else None
        if tools_style and tools_style.placement == "system":
            system = ("" if system is None else system + tools_style.joiner) + tools_style.render(
                tools)
        trained = False  # whether the latest reply is trained
        emit(self._fill(self.prefix))
        if tools_style and tools_style.placement == "system_turn":
            emit(tools_style.render(tools))
        if system is not None and self.system_placement == "turn":
            system_format = self.tools_system if tools and self.tools_system else self.system
            emit(self._fill(system_format, self._strip("system", system)))
        for i, msg in enumerate(body):
            role = msg["role"]
            if role == "user":
                if tools_style and tools_style.placement == "last_user" and i == last_user:
                    emit(tools_style.render(tools))
                content = msg["content"]
                merge = system is not None and (
                    self.system_placement == "first_user" and i == 0
                    or self.system_placement == "final_user" and i == len(body) - 1)
                if merge and not self.trim_user_before_merge:
                    content = self._fill(self.system, system) + content
                content = self._strip("user", content)
                if merge and self.trim_user_before_merge:
                    content = self._fill(self.system, system) + content
                if tools_style and tools_style.placement == "first_user" and i == 0:
                    content = tools_style.render(tools) + content
                self._emit_turn(self._fill(self.user, content), self.user_opening_ends_reply,
                                body, i, emit, trained)
            elif role == "assistant":
                trained = msg.get("loss")
                if trained is None:
                    trained = self.train_on == "all" or i == last_answer
                if self.think:
                    emit_thinking_reply(self, msg, emit, trained,
                                        i > last_user or self.think_history == "keep",
                                        i == len(body) - 1)
                elif msg.get("tool_calls"):
                    self._emit_tool_calls(msg, emit, trained)
                else:
                    if self.reasoning and msg.get("reasoning_content"):
                        emit(self._fill(self.reasoning, msg["reasoning_content"]), trained)
                    self._emit_prefix(emit, trained)
                    content = self._strip("assistant", msg["content"])
                    emit(content + self._fill(self.assistant_suffix), trained)
                    emit(self._fill(self.turn_separator))
            elif role == "tool":
                if i == 0 or body[i - 1]["role"] != "tool":
                    emit(self.tool_group[0])
                self._emit_turn(self._fill(self.tool, msg["content"], _tool_call_id(msg, self)),
                                self.tool_opening_ends_reply, body, i, emit, trained)
                if i == len(body) - 1 or body[i + 1]["role"] != "tool":
                    emit(self.tool_group[1])
        if add_generation_prompt:
            emit(self._fill(self._generation_prompt()))
        else:
            ends_with_reply = last_answer == len(body) - 1
            emit(self._fill(self.closing), trained=trained and ends_with_reply)
        return Rendered("".join(parts), tuple(spans))

    @staticmethod
    def _emit_turn(text, opening, body, i, emit, trained):
        """A user or tool turn; its `opening`, when it follows a reply, ends that reply and is
        trained with it (`trained`: whether that reply is)."""
        if opening and i > 0 and body[i - 1]["role"] == "assistant":
            emit(opening, trained)
            text = text[len(opening):]
        emit(text)


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

