"""Scoring (prompt, completion) pairs with a trained reward model.

A reward model is what `objective = dict(type='reward')` exports: a whole, stock
sequence-classification model directory (one label) with its tokenizer and the
template it was trained with recorded in xft_meta.json. `load_reward_model`
loads one; `RewardScorer.score` renders each prompt + completion with that
template and encodes it as training encodes one side of a pair
(xft.data.encode_pairs: one whole text, tokenized once), so a completion gets
the score training optimised. Users: `xft eval --reward` and the RL objectives'
rewards.

    scorer = load_reward_model("work_dirs/rm/hf")
    scorer.score(["Who are you?"], ["I am Tuna."])   # tensor([1.73]), float32
"""

import torch

from xft.data.collate import PadCollator
from xft.data.collate_pairs import side_row
from xft.data.encode_pairs import LABELED_SIDES, encode_rendered_sides, render_sides
from xft.data.preference import LabeledReply
from xft.errors import ConfigError, RecordError
from xft.model.logprobs import sequence_scores


def as_messages(prompt):
    """A prompt as messages: a str is one user turn; a list of messages is kept."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return prompt
    raise RecordError(f"a prompt must be a str or a list of messages, got "
                      f"{type(prompt).__name__}", field="prompt")


def as_reply(completion):
    """A completion as one assistant message (a str is its content)."""
    if isinstance(completion, str):
        return {"role": "assistant", "content": completion}
    if isinstance(completion, dict) and completion.get("role") == "assistant":
        return completion
    raise RecordError("a completion must be a str or one assistant message", field="completion")


class RewardScorer:
    """A reward model with its tokenizer and bound template; `score` is its one job."""

    def __init__(self, model, tokenizer, template, max_length=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.pad = PadCollator(tokenizer.pad_token_id)

    def encode(self, prompts, completions):
        """Token ids of each prompt + completion, exactly as training encodes a pair's side.
        With `max_length`, a longer row keeps its last max_length tokens (the score is read
        at the last one), so every completion gets a score."""
        if len(prompts) != len(completions):
            raise ConfigError(f"{len(prompts)} prompts but {len(completions)} completions")
        rendered = [render_sides(LabeledReply(as_messages(p), as_reply(c), True), self.template)
                    for p, c in zip(prompts, completions)]
        samples, stats = encode_rendered_sides(rendered, self.tokenizer, max_length=2**62)
        if stats.dropped_no_label:
            raise RecordError("a prompt renders to no text before its completion")
        return self.cut([side_row(s["prompt_ids"], s[f"{LABELED_SIDES[0]}_ids"],
                                  s[f"{LABELED_SIDES[0]}_labels"])["input_ids"] for s in samples])

    def score(self, prompts, completions, batch_size=8):
        """One float32 score per (prompt, completion), in order, on the CPU."""
        return self.score_ids(self.encode(prompts, completions), batch_size)

    def encode_texts(self, texts):
        """Token ids of whole texts already in the model's format (template and special
        tokens written out, as LLaMA-Factory's scoring API takes them): tokenized as they
        are, nothing added."""
        return self.cut([self.tokenizer(text, add_special_tokens=False)["input_ids"]
                         for text in texts])

    def cut(self, rows):
        if self.max_length is None:
            return rows
        return [ids[-self.max_length:] for ids in rows]

    @torch.no_grad()
    def score_ids(self, rows, batch_size=8):
        """One float32 score per row of token ids (read at its last token), on the CPU."""
        device = next(self.model.parameters()).device
        scores = []
        for begin in range(0, len(rows), batch_size):
            batch = self.pad([{"input_ids": ids, "labels": ids}
                              for ids in rows[begin:begin + batch_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            scores.append(sequence_scores(self.model, batch).cpu())
        return torch.cat(scores) if scores else torch.zeros(0)


def is_reward_model_dir(path):
    """Whether `path` holds an exported reward model: a sequence classifier with one label."""
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    config = json.loads(config.read_text(encoding="utf-8"))
    classifier = any(a.endswith("ForSequenceClassification")
                     for a in config.get("architectures") or [])
    labels = config.get("num_labels", len(config.get("id2label") or {"0": 0}))
    return classifier and labels == 1


def load_reward_model(path, template_name=None, dtype="float32", device=None, max_length=None):
    """A RewardScorer for an exported reward model directory. The template is the one
    recorded at export (xft_meta.json), else `template_name`, else the tokenizer's own
    jinja ('auto'). ConfigError when the directory cannot be loaded as one."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from xft.data.templates import get_template
    from xft.engine.export import read_meta
    from xft.model.build import load_causal_lm
    from xft.outputs import require_model_dir
    from xft.paths import resolve_path

    path = resolve_path(path)
    require_model_dir(path, "reward model")
    if (Path(path) / "adapter_config.json").is_file():
        raise ConfigError(f"{path} is an adapter; a reward model is exported whole "
                          "(objective 'reward' writes a sequence-classification model)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load tokenizer from '{path}': {e}") from None
    model = load_causal_lm(path, dtype, kind="sequence_classification")
    if model.config.num_labels != 1:
        raise ConfigError(f"{path} is not a reward model: its head has "
                          f"{model.config.num_labels} labels, not 1")
    if device is not None:
        model = model.to(device)
    template = get_template(template_name or read_meta(path).get("template") or "auto", tokenizer)
    return RewardScorer(model, tokenizer, template, max_length)
