"""A trained reward model as a reward: `dict(type='reward_model', path=DIR, ...)`.

DIR is a reward model as the preference stage exports it (objective 'reward',
docs/preference.md): a whole sequence-classification model with one label, its
tokenizer and the template it was trained with. Scoring is the preference
stage's own (xft.inference.reward): the prompt conversation plus the completion
as the assistant's reply, rendered with that template and encoded as training
encodes one side of a pair, read at the last token. The reward model may use
another tokenizer and template than the policy: it only ever sees text.

The model is loaded on first use (configs are validated without loading it),
frozen, on the device of the policy's rollout.
"""

from xft.errors import ConfigError
from xft.paths import MODEL_FILES, check_local

DTYPES = ("float32", "bfloat16", "float16")


class RewardModelScorer:
    """Scores completions with a reward model: called with (completions, records, device),
    returns one float each; `records` carry the prompt conversation in 'messages'."""

    def __init__(self, path, template=None, batch_size=8, dtype="float32"):
        if not isinstance(path, str) or not path:
            raise ConfigError(f"reward_model: 'path' must be a model directory, got {path!r}")
        check_local(path, "reward model directory", "reward_model.path", need=MODEL_FILES)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"reward_model: 'batch_size' must be a positive integer, "
                              f"got {batch_size!r}")
        if dtype not in DTYPES:
            raise ConfigError(f"reward_model: 'dtype' must be one of {list(DTYPES)}, "
                              f"got {dtype!r}")
        self.path, self.template, self.batch_size, self.dtype = path, template, batch_size, dtype
        self.scorer = None  # xft.inference.reward.RewardScorer, on first use

    def __call__(self, completions, records, device="cpu"):
        if self.scorer is None:
            from xft.inference.reward import load_reward_model

            self.scorer = load_reward_model(self.path, self.template, self.dtype, device)
            self.scorer.model.requires_grad_(False)
        return self.scorer.score([r["messages"] for r in records], completions,
                                 self.batch_size).tolist()
