"""Chat generation with the template a model was trained on, used by training's
evaluation chat (xft.inference.chat_eval) and by the tools (`xft chat`, `xft eval`).

Generation stops at the tokenizer's EOS, at the template's stop words (single
tokens) and at its stop strings (text, e.g. MOSS's `<eom>`, matched by
transformers' stop_strings); the stop text is never shown or kept in the
history. Greedy by default; a temperature > 0 samples (seeded).
"""

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Sampling:
    """How answers are drawn: greedy when temperature is 0."""

    temperature: float = 0.0
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    repetition_penalty: Optional[float] = None
    seed: Optional[int] = None

    def generate_kwargs(self):
        kwargs = {"do_sample": self.temperature > 0}
        if self.temperature > 0:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # a model's generation_config may carry sampling values; greedy ignores them
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs


class ChatSession:
    """A model, its tokenizer and template, and the conversation so far."""

    def __init__(self, model, tokenizer, template, system=None, max_new_tokens=256,
                 sampling=None):
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.system, self.max_new_tokens = system, max_new_tokens
        self.sampling = sampling or Sampling()
        self.hit_limit = False  # whether the last answer was cut at max_new_tokens
        self.stop_texts, self.stop_ids, self.stop_strings = template_stops(tokenizer, template)
        if self.sampling.seed is not None:
            from transformers import set_seed

            set_seed(self.sampling.seed)
        self.reset()

    def reset(self):
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def prompt_ids(self, messages):
        """Token ids of `messages` rendered with the template, ready for the reply."""
        text = self.template.render(messages, add_generation_prompt=True).text
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt")

    @torch.no_grad()
    def ask(self, question, streamer=None):
        """Answer `question` after the history, add both turns to it, return the answer."""
        self.messages.append({"role": "user", "content": question})
        try:
            answer, message = self.reply(self.messages, streamer)
        except BaseException:  # KeyboardInterrupt too: `xft chat`'s Ctrl-C stops one answer
            self.messages.pop()  # a failed or stopped turn leaves no trace in the history
            raise
        # Thoughts and tool calls go back into the history as the template renders them.
        self.messages.append(message)
        return answer

    @property
    def pad_id(self):
        pad_id = self.tokenizer.pad_token_id
        return pad_id if pad_id is not None else self.stop_ids[0]

    def _generate(self, inputs, streamer=None):
        extra = {"stop_strings": self.stop_strings, "tokenizer": self.tokenizer} \
            if self.stop_strings else {}
        return self.model.generate(
            **inputs, max_new_tokens=self.max_new_tokens, eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id, streamer=streamer, **self.sampling.generate_kwargs(),
            **extra)

    def _decode(self, new_tokens, keep_special=False):
        """(the answer text of generated ids: up to the first stop token, stop texts cut;
        whether generation ran into max_new_tokens without reaching a stop). With
        keep_special, special tokens stay in the text (tool-call markers may be special)."""
        ids = new_tokens.tolist()
        end = next((i for i, token in enumerate(ids) if token in self.stop_ids), None)
        answer = self.tokenizer.decode(ids[:end], skip_special_tokens=not keep_special)
        answer, stopped = cut_at_stop(answer, self.stop_texts)
        return answer, end is None and not stopped and len(ids) >= self.max_new_tokens

    @torch.no_grad()
    def answer(self, messages, streamer=None):
        """The reply to a conversation that ends with a user message (history untouched)."""
        return self.reply(messages, streamer)[0]

    @torch.no_grad()
    def reply(self, messages, streamer=None):
        """(answer text, the assistant message it stands for): thoughts and tool calls are
        read back as the template writes them (`parse_reply`, the parser `xft serve` uses),
        the calls from the text with special tokens kept (Mistral's [TOOL_CALLS] is one)."""
        inputs = {k: v.to(self.model.device) for k, v in self.prompt_ids(messages).items()}
        new_tokens = self._generate(inputs, streamer)[0, inputs["input_ids"].shape[1]:]
        answer, self.hit_limit = self._decode(new_tokens)
        message = self.template.parse_reply(self._decode(new_tokens, keep_special=True)[0])
        if not message.get("tool_calls"):
            message = self.template.parse_reply(answer)
        return answer, message

    @torch.no_grad()
    def answer_batch(self, conversations):
        """Replies to several conversations in one generate call (prompts left-padded).

        Equal to `answer` on each conversation in exact arithmetic; in floating point
        the padded batch's different shapes can, rarely, flip a near-tie."""
        encoded = [self.prompt_ids(messages)["input_ids"][0].tolist()
                   for messages in conversations]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in encoded])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids)
                                       for ids in encoded])
        output = self._generate({"input_ids": input_ids.to(self.model.device),
                                 "attention_mask": attention_mask.to(self.model.device)})
        return [self._decode(row[width:])[0] for row in output]


def template_stops(tokenizer, template):
    """How replies in `template` end: (every stop text, cut from answers and never shown;
    the token ids that end generation; the stop texts that are several tokens with this
    tokenizer, which generate matches on the decoded text). Chat and RL rollouts share it."""
    texts = [*template.stop_words, *getattr(template, "stop_strings", ())]
    ids = {tokenizer.eos_token_id} - {None}
    strings = []
    for word in texts:
        tokens = tokenizer.encode(word, add_special_tokens=False)
        if len(tokens) == 1:
            ids.add(tokens[0])
        else:
            strings.append(word)
    return texts, sorted(ids), strings


def cut_at_stop(text, stops):
    """(text before the first stop string, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


def stop_aware_streamer(tokenizer, stop_strings):
    """A TextStreamer that never prints a stop string or what follows it.

    Text that could be the start of a stop string is held back until the next
    piece shows whether it is one.
    """
    from transformers import TextStreamer

    class StopAwareStreamer(TextStreamer):
        def __init__(self):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.pending, self.stopped = "", False

        def on_finalized_text(self, text, stream_end=False):
            if not self.stopped:
                self.pending += text
                shown, self.stopped = cut_at_stop(self.pending, stop_strings)
                if not self.stopped and not stream_end:
                    held = stop_prefix_length(shown, stop_strings)
                    shown = shown[:len(shown) - held]
                self.pending = self.pending[len(shown):]
                print(shown, end="", flush=True)
            if stream_end:
                print(flush=True)
                self.pending, self.stopped = "", False

    return StopAwareStreamer()


def stop_prefix_length(text, stops):
    """Length of the longest end of `text` that begins some stop string."""
    return max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
