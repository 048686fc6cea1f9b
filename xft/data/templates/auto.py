"""The `auto` template: the tokenizer's own jinja chat_template, with loss spans.

The jinja template only produces text, so each assistant turn i is located in
the full rendering by marker substitution:

    full    = render(messages)
    marked  = render(messages with turn i's reply replaced by a marker)
    ending  = render(messages[:i] + [the marker turn])      # turn i ends the conversation
    before  = render(messages[:i], add_generation_prompt=True)

The reply is where `full` and `marked` differ: whatever the template made of it
there, so templates that rewrite earlier turns work too (Qwen3 and DeepSeek-R1
drop earlier thoughts, Mistral v0.3 moves the system prompt into the last user
turn). All that the model writes after the generation prompt `before` is
trained: the span is widened back over the text `ending` puts between the
prompt and the reply, as far as it precedes the reply in `full` (a thinking
model's '<think>', the space of 'Assistant: ' after a prompt 'Assistant:'). The end-of-turn tokens are those that follow the
reply both in `full` and in `ending` (so text a template writes only at the
very end, e.g. a closing EOS, is not claimed by earlier turns), minus trailing
whitespace (the line break between turns is not trained). The trained text is
always a stretch of the official rendering.
"""

from dataclasses import dataclass, replace

from xft.data.templates.base import TRAIN_ON, Rendered
from xft.errors import ConfigError, RecordError

CONTENT_MARKER = "\ue000xft-reply\ue000"  # private-use characters: never in real text


@dataclass(frozen=True)
class AutoTemplate:
    name: str = "auto"
    description: str = "the tokenizer's own chat_template (jinja); loss spans by marker substitution"
    tokenizer: object = None
    train_on: str = "all"
    stop_words: tuple = ()
    stop_strings: tuple = ()

    def bind(self, tokenizer=None, train_on="all"):
        if train_on not in TRAIN_ON:
            raise ConfigError(f"train_on must be one of {list(TRAIN_ON)}, got {train_on!r}")
        if tokenizer is None:
            return replace(self, train_on=train_on)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("template 'auto' needs a tokenizer with a chat_template; this one "
                              "has none, so pick a named template (xft template list)")
        return replace(self, tokenizer=tokenizer, train_on=train_on)

    def _jinja(self, messages, add_generation_prompt=False):
        if self.tokenizer is None:
            raise ConfigError("template 'auto' renders with the tokenizer's chat_template; bind it "
                              "with get_template('auto', tokenizer)")
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
            start, end = self._marked_reply(messages, i, full)
            while end > start and full[end - 1].isspace():
                end -= 1
            if end <= start:
                raise RecordError(f"template 'auto': cannot find assistant turn {i} in the "
                                  "rendered text", field=f"messages[{i}]")
            spans.append((start, end))
        return Rendered(full, tuple(spans))

    def parse_reply(self, text):
        """The generated reply as a message (a jinja template says nothing about parsing)."""
        return {"role": "assistant", "content": text}

    def _marked_reply(self, messages, i, full):
        """(start, end) of turn i's reply and its end-of-turn tokens in `full`."""
        reply = {k: v for k, v in messages[i].items()
                 if k not in ("tool_calls", "reasoning_content")}
        marked_messages = messages[:i] + [dict(reply, content=CONTENT_MARKER)]
        marked = self._jinja(marked_messages + messages[i + 1:])
        start = _common_prefix_length(full, marked)
        tail = min(_common_prefix_length(full[::-1], marked[::-1]),
                   min(len(full), len(marked)) - start)
        end = len(full) - tail
        ending = self._jinja(marked_messages)
        found = ending.find(CONTENT_MARKER)
        if found < 0 or marked.find(CONTENT_MARKER) < 0:
            raise RecordError(f"template 'auto': cannot find assistant turn {i} in the "
                              "rendered text", field=f"messages[{i}]")
        turn_end = ending[found + len(CONTENT_MARKER):]
        # What the model writes after the generation prompt before the reply proper
        # (Qwen3's '<think>\n\n</think>\n\n', the space of 'Assistant: ') is trained too:
        # widen the start over as much of it as precedes the reply in `full`.
        written = ending[_prompt_end(self._jinja(messages[:i], add_generation_prompt=True),
                                     ending, found):found]
        start -= max(k for k in range(len(written) + 1) if full[:start].endswith(written[:k]))
        return start, end + self._common_token_end(full[end:], turn_end)

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
        if self.tokenizer is None:
            raise ConfigError("template 'auto' is the tokenizer's own chat_template; bind it "
                              "with get_template('auto', tokenizer)")
        return self.tokenizer.chat_template




def _prompt_end(prompt, ending, limit):
    """Where the generation prompt ends inside `ending` (before `limit`): its length when
    `ending` starts with it, else after the last place that ends like the prompt's last
    8+ characters (a template that rewrites the prompt's earlier text, e.g. moves the
    system prompt); `limit` (nothing written) when there is none."""
    if ending.startswith(prompt):
        return len(prompt)
    for size in range(min(len(prompt), 64), min(len(prompt), 8) - 1, -1):
        found = ending.rfind(prompt[-size:], 0, limit)
        if found >= 0:
            return found + size
    return limit


def _common_prefix_length(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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
