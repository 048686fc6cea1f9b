"""The `auto` template: the tokenizer's own jinja chat_template, with loss spans.

The jinja template only produces text, so the spans are found by rendering
growing prefixes of the conversation:

    full   = render(messages)
    before = render(messages[:i], add_generation_prompt=True)   # up to assistant turn i
    after  = render(messages[:i + 1])                           # including turn i

Turn i's reply is the text `after` adds to `before`: from where its content
starts (found by rendering a marker in place of the content, which skips
scaffolding such as the space of "Assistant: " that a generation prompt
"Assistant:" lacks) to the last token that `after` shares with `full` (so text
a template writes only at the very end, e.g. a closing EOS, is not claimed by
earlier turns), minus trailing whitespace (the line break between turns is not
trained). The reply must sit at the same place in `full`: a template that
rewrites earlier text when later messages arrive (Mistral v0.3 moves the system
prompt into the last user turn; reasoning templates drop earlier thoughts) is
refused with a RecordError that suggests a named template.
"""

from dataclasses import dataclass, field

from xft.data.templates.base import TRAIN_ON, Rendered
from xft.errors import ConfigError, RecordError

CONTENT_MARKER = "\ue000xft-reply\ue000"  # private-use characters: never in real text


@dataclass(frozen=True)
class AutoTemplate:
    """The registry's spec: renders nothing until bound to a tokenizer."""

    name: str = "auto"
    description: str = "the tokenizer's own chat_template (jinja); loss spans from growing prefixes"
    stop_words: tuple = ()
    stop_strings: tuple = ()

    def bind(self, tokenizer, train_on="all"):
        if train_on not in TRAIN_ON:
            raise ConfigError(f"train_on must be one of {list(TRAIN_ON)}, got {train_on!r}")
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("template 'auto' needs a tokenizer with a chat_template; this one "
                              "has none, so pick a named template (xft template list)")
        return BoundAutoTemplate(self.name, self.description, self.stop_words,
                                 self.stop_strings, tokenizer=tokenizer, train_on=train_on)


@dataclass(frozen=True)
class BoundAutoTemplate(AutoTemplate):
    """'auto' bound to a tokenizer: renders with its chat_template."""

    tokenizer: object = field(kw_only=True)
    train_on: str = field(kw_only=True)

    def _jinja(self, messages, add_generation_prompt=False):
        messages, tools = hf_chat(messages)
        try:
            return self.tokenizer.apply_chat_template(
                messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception as e:  # jinja raise_exception, missing keys...
            raise RecordError(f"the tokenizer's chat_template failed: {e}",
                              field="messages") from None

    def render(self, messages, add_generation_prompt=False) -> Rendered:
        full = self._jinja(messages, add_generation_prompt)
        if add_generation_prompt:
            # A prompt for generation (xft chat) trains nothing; skipping the spans also lets
            # chat use templates that rewrite earlier turns.
            return Rendered(full, ())
        answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        spans = []
        for i in answers:
            trained = messages[i].get("loss")
            if trained is None:
                trained = self.train_on == "all" or i == answers[-1]
            if not trained:
                continue
            before = self._jinja(messages[:i], add_generation_prompt=True)
            after = self._jinja(messages[:i + 1])
            if not (after.startswith(before) and full.startswith(before)):
                raise RecordError(
                    "template 'auto': the tokenizer's chat_template does not render this "
                    f"conversation as growing prefixes (turn {i} changes earlier text); use a "
                    "named template", field=f"messages[{i}]")
            start = self._content_start(messages[:i + 1], len(before))
            end = self._common_token_end(after, full)
            while end > start and after[end - 1].isspace():
                end -= 1
            if end <= start:
                raise RecordError(f"template 'auto': cannot find assistant turn {i} in the "
                                  "rendered text", field=f"messages[{i}]")
            spans.append((start, end))
        return Rendered(full, tuple(spans))

    def _content_start(self, messages, begin):
        """Where the last message's content starts: found by rendering a marker in its place
        (text search could not tell a template's ' ' from a reply's leading space)."""
        if messages[-1].get("tool_calls"):
            return begin  # the whole turn is the model's output
        marked = self._jinja(messages[:-1] + [dict(messages[-1], content=CONTENT_MARKER)])
        found = marked.find(CONTENT_MARKER, begin)
        return begin if found < 0 else found

    def _common_token_end(self, a, b):
        """End (in characters) of the tokens that `a` and `b` share from their start.

        Compared as tokens, not characters: '<|endoftext|>' and '<|user|>' share the
        characters '<|' but no token.
        """
        ta, tb = (self.tokenizer(t, add_special_tokens=False, return_offsets_mapping=True)
                  for t in (a, b))
        end = 0
        for id_a, id_b, span_a, span_b in zip(ta["input_ids"], tb["input_ids"],
                                              ta["offset_mapping"], tb["offset_mapping"]):
            if id_a != id_b or span_a != span_b:
                break
            end = span_a[1]
        return end

    def to_jinja(self) -> str:
        return self.tokenizer.chat_template




def hf_chat(messages):
    """(messages, tools) as apply_chat_template takes them.

    xft keeps tool definitions on the system message; jinja templates take them as
    `tools=`. A system message with content None (a record with tools but no
    system prompt) is left out, so the template uses its own default.
    """
    if not (messages and messages[0]["role"] == "system"):
        return messages, None
    first, rest = messages[0], messages[1:]
    if first["content"] is not None:
        rest = [{k: v for k, v in first.items() if k != "tools"}] + rest
    return rest, first.get("tools") or None
