"""`xft chat`: talk to a trained model with the template it was trained on.

MODEL may be a full model directory (or hub id) or an adapter directory written
by xft; for an adapter the base model is read from its adapter_config.json.
The default template is the one recorded in xft_meta.json at export time, else
the tokenizer's own chat_template ('auto').

Generation stops at the tokenizer's EOS, at the template's stop words (single
tokens) and at its stop strings (text, e.g. MOSS's `<eom>`, matched by
transformers' stop_strings); the stop text is never shown or kept in the
history. Greedy by default; `--temperature > 0` samples (seeded by `--seed`).

Three ways to use it: interactive (streamed answers, RESET clears the history,
EXIT or Ctrl-D quits), `--prompt TEXT` (one answer), `--prompt-file FILE`
(JSONL in, JSONL out; see docs/tools.md).
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from xft.data.templates import get_template
from xft.engine.export import read_meta
from xft.errors import ConfigError, DataError, XftError
from xft.model.build import load_causal_lm
from xft.paths import resolve_path

RESET, EXIT = "RESET", "EXIT"


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
            answer = self.answer(self.messages, streamer)
        except Exception:
            self.messages.pop()  # a failed turn leaves no trace in the history
            raise
        self.messages.append({"role": "assistant", "content": answer})
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

    def _decode(self, new_tokens):
        """The answer text of generated ids: up to the first stop token, stop texts cut."""
        ids = new_tokens.tolist()
        end = next((i for i, token in enumerate(ids) if token in self.stop_ids), len(ids))
        answer = self.tokenizer.decode(ids[:end], skip_special_tokens=True)
        return cut_at_stop(answer, self.stop_texts)[0]

    @torch.no_grad()
    def answer(self, messages, streamer=None):
        """The reply to a conversation that ends with a user message (history untouched)."""
        inputs = {k: v.to(self.model.device) for k, v in self.prompt_ids(messages).items()}
        output = self._generate(inputs, streamer)
        return self._decode(output[0, inputs["input_ids"].shape[1]:])

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
        return [self._decode(row[width:]) for row in output]


def template_stops(tokenizer, template):
    """How replies in `template` end: (every stop text, cut from answers and never shown;
    the token ids that end generation; the stop texts that are several tokens with this
    tokenizer, which generate matches on the decoded text)."""
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
                    held = _stop_prefix_length(shown, stop_strings)
                    shown = shown[:len(shown) - held]
                self.pending = self.pending[len(shown):]
                print(shown, end="", flush=True)
            if stream_end:
                print(flush=True)
                self.pending, self.stopped = "", False

    return StopAwareStreamer()


def _stop_prefix_length(text, stops):
    """Length of the longest end of `text` that begins some stop string."""
    return max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


def load_chat_model(model_path, adapter=None, template_name=None, bits=None):
    """(model, tokenizer, template) for a model dir/hub id, optionally with an adapter."""
    from transformers import AutoTokenizer

    model_path = resolve_path(model_path)
    adapter_config = Path(model_path) / "adapter_config.json"
    if adapter is None and adapter_config.is_file():
        adapter = model_path
        model_path = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    has_tokenizer = adapter and (Path(adapter) / "tokenizer_config.json").is_file()
    meta_dir = adapter if has_tokenizer else model_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(meta_dir)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load tokenizer from '{meta_dir}': {e}") from None
    template_name = template_name or read_meta(meta_dir).get("template")
    if template_name is None:
        if not getattr(tokenizer, "chat_template", None):
            raise XftError(f"no chat template recorded in {meta_dir} and its tokenizer has none; "
                           "pass --template NAME (xft template list)")
        template_name = "auto"  # the tokenizer's own jinja template
    template = get_template(template_name, tokenizer)
    model = load_causal_lm(model_path, quantization_config=_quantization(bits))
    if adapter is not None:
        from xft.tools.merge import load_adapter

        model = load_adapter(model, adapter, model_path)
    model.eval()
    return model, tokenizer, template


def _quantization(bits):
    if bits is None:
        return None
    from xft.config.schema import QuantizationCfg
    from xft.model.quant import bitsandbytes_config

    return bitsandbytes_config(QuantizationCfg(bits=bits), "float32")


def read_prompt_file(path):
    """Conversations to answer, one JSON object a line:
    {"prompt": "...", "system": "..." (optional)} or {"messages": [..., {"role": "user", ...}]}."""
    from xft.data.conversation import check_conversation
    from xft.errors import RecordError

    from xft.data.json_lines import json_lines

    items = []
    for where, record in json_lines(path):
        try:
            items.append((record, _conversation(record, check_conversation)))
        except RecordError as e:
            raise DataError(e.reason, file=where, field=e.field) from None
    if not items:
        raise DataError("no prompts in the file", file=path)
    return items


def _conversation(record, check_conversation):
    from xft.errors import RecordError

    if not isinstance(record, dict):
        raise RecordError(f"line must be a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise RecordError("must be a non-empty list of messages", field="messages")
        check_conversation(messages)
        if messages[-1].get("role") != "user":
            raise RecordError("the last message must be the user's, to be answered",
                              field=f"messages[{len(messages) - 1}].role")
        return messages
    prompt, system = record.get("prompt"), record.get("system")
    if not isinstance(prompt, str) or not prompt:
        raise RecordError("missing or not a non-empty string (or give 'messages')",
                          field="prompt")
    if system is not None and not isinstance(system, str):
        raise RecordError("must be a string", field="system")
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]


def answer_file(session, prompt_file, output=None):
    """Answer every line of prompt_file; JSONL {...the line, "answer"} to output or stdout."""
    items = read_prompt_file(prompt_file)  # every line checked before the first answer
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    try:
        for record, messages in items:
            if session.system and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": session.system}, *messages]
            answer = session.answer(messages)
            out.write(json.dumps({**record, "answer": answer}, ensure_ascii=False) + "\n")
            out.flush()
    finally:
        if output:
            out.close()
    return len(items)


def run_chat(args):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a person reads this terminal: no loading bars
    model, tokenizer, template = load_chat_model(args.model, args.adapter, args.template,
                                                 args.bits)
    sampling = Sampling(args.temperature, args.top_p, args.top_k, args.repetition_penalty,
                        args.seed)
    session = ChatSession(model, tokenizer, template, args.system, args.max_new_tokens,
                          sampling)
    if args.prompt_file is not None:
        count = answer_file(session, args.prompt_file, args.output)
        if args.output:
            print(f"xft: wrote {count} answers to {args.output}")
        return
    if args.prompt is not None:
        print(session.ask(args.prompt))
        return
    print(f"Chatting with {args.model} (template {template.name}). "
          f"Type {RESET} to clear the history, {EXIT} or Ctrl-D to quit.")
    streamer = stop_aware_streamer(tokenizer, session.stop_texts)
    while True:
        try:
            question = input("\nUser: ").strip()
        except EOFError:
            print()
            return
        if question == EXIT:
            return
        if question == RESET:
            session.reset()
            print("(history cleared)")
            continue
        if question:
            print("Assistant: ", end="", flush=True)
            session.ask(question, streamer=streamer)
