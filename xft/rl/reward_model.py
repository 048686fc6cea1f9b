"""A trained reward model as a reward: `dict(type='reward_model', path=DIR, ...)`.

DIR is a reward model as the preference-training stage exports it (docs/preference.md):
a transformers sequence-classification model with one label, saved with its
tokenizer and chat template. Each completion is scored as the reward model was
trained: the prompt conversation plus the completion as the assistant's reply,
rendered by the reward model's own template (its tokenizer's chat template,
'auto', unless `template` names an xft template), tokenized whole, and read by
the model's forward at the last non-padding token, as transformers reads any
sequence-classification model. The reward model may use another tokenizer and
template than the policy: it only ever sees text.

The model is loaded on first use (configs are validated without loading it) and
runs without gradients on the device of the policy's rollout.
"""

import torch

from xft.data.templates import get_template
from xft.errors import ConfigError, doing
from xft.paths import MODEL_FILES, check_local, resolve_path


class RewardModelScorer:
    """Scores completions with a sequence-classification model (one float each)."""

    def __init__(self, path, template="auto", batch_size=8, dtype="float32"):
        if not isinstance(path, str) or not path:
            raise ConfigError(f"reward_model: 'path' must be a model directory, got {path!r}")
        check_local(path, "reward model directory", "reward_model.path", need=MODEL_FILES)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"reward_model: 'batch_size' must be a positive integer, "
                              f"got {batch_size!r}")
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"reward_model: 'dtype' must be float32, bfloat16 or float16, "
                              f"got {dtype!r}")
        self.path, self.template_name = resolve_path(path), template
        self.batch_size, self.dtype = batch_size, getattr(torch, dtype)
        self.model = self.tokenizer = self.template = None

    def _load(self, device):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        with doing(f"loading the reward model from '{self.path}'"):
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                self.path, dtype=self.dtype)
        if self.model.config.num_labels != 1:
            raise ConfigError(f"reward model '{self.path}' has {self.model.config.num_labels} "
                              "labels; a reward model has one (a scalar score)")
        if self.model.config.pad_token_id is None:  # transformers needs it to find the end
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.template = get_template(self.template_name, self.tokenizer)
        self.model.to(device).eval().requires_grad_(False)

    def texts(self, completions, records):
        """The rendered conversations the reward model reads (prompt + reply)."""
        return [self.template.render([*record["messages"],
                                      {"role": "assistant", "content": completion}]).text
                for completion, record in zip(completions, records)]

    @torch.no_grad()
    def __call__(self, completions, records, device="cpu"):
        """One score per completion; `records` carry the prompt conversation in 'messages'."""
        if self.model is None:
            self._load(device)
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else self.tokenizer.eos_token_id
        scores = []
        texts = self.texts(completions, records)
        for start in range(0, len(texts), self.batch_size):
            rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"]
                    for t in texts[start:start + self.batch_size]]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows],
                                device=device)
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            scores += logits[:, 0].float().tolist()
        return scores

