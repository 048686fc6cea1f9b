"""`xft chat`: talk to a trained model with the template it was trained on.

MODEL may be a full model directory (or hub id) or an adapter directory written
by xft; for an adapter the base model is read from its adapter_config.json.
The default template is the one recorded in xft_meta.json at export time.
"""

import json
from pathlib import Path

import torch

from xft.data.templates import get_template
from xft.engine.export import read_meta
from xft.errors import XftError
from xft.model.build import load_causal_lm
from xft.paths import resolve_path

RESET, EXIT = "RESET", "EXIT"


class ChatSession:
    """A model, its tokenizer and template, and the conversation so far."""

    def __init__(self, model, tokenizer, template, system=None, max_new_tokens=256):
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.system, self.max_new_tokens = system, max_new_tokens
        self.stop_ids = self._stop_token_ids()
        self.reset()

    def reset(self):
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def _stop_token_ids(self):
        ids = {self.tokenizer.eos_token_id} - {None}
        for word in self.template.stop_words:
            token_id = self.tokenizer.convert_tokens_to_ids(word)
            if token_id is not None and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return sorted(ids)

    @torch.no_grad()
    def ask(self, question, streamer=None):
        """Answer `question` greedily, add both turns to the history, return the answer."""
        self.messages.append({"role": "user", "content": question})
        text = self.template.render(self.messages, add_generation_prompt=True).text
        inputs = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        output = self.model.generate(
            **inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
            eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id,
            streamer=streamer)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        answer = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        for word in self.template.stop_words:
            answer = answer.split(word)[0]
        self.messages.append({"role": "assistant", "content": answer})
        return answer


def load_chat_model(model_path, adapter=None, template_name=None):
    """(model, tokenizer, template) for a model dir/hub id, optionally with an adapter."""
    from transformers import AutoTokenizer

    model_path = resolve_path(model_path)
    adapter_config = Path(model_path) / "adapter_config.json"
    if adapter is None and adapter_config.is_file():
        adapter = model_path
        model_path = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    meta_dir = adapter or model_path
    template_name = template_name or read_meta(meta_dir).get("template")
    if template_name is None:
        raise XftError(f"no chat template recorded in {meta_dir}; pass --template NAME")
    tokenizer = AutoTokenizer.from_pretrained(meta_dir)
    template = get_template(template_name, tokenizer)
    model = load_causal_lm(model_path)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model, tokenizer, template


def run_chat(args):
    from transformers import TextStreamer

    model, tokenizer, template = load_chat_model(args.model, args.adapter, args.template)
    session = ChatSession(model, tokenizer, template, args.system, args.max_new_tokens)
    if args.prompt is not None:
        print(session.ask(args.prompt))
        return
    print(f"Chatting with {args.model} (template {template.name}). "
          f"Type {RESET} to clear the history, {EXIT} or Ctrl-D to quit.")
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
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
