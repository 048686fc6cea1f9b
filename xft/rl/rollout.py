"""Rollouts: the policy answers prompts the way `xft chat` would, and keeps its log-probs.

A prompt comes from any SFT-style record: the conversation its format map
function returns, minus its final assistant turn (`prompt_messages`), or a
record's `prompt` field (`prompt_from_record`). It is rendered by the run's bound
ChatTemplate with the generation prompt, exactly as `xft chat` renders a
question, and generation stops at the template's stop tokens and stop strings
(xft.inference.chat.template_stops), so the policy is trained on the turns it will
produce in chat.

Generation goes through a backend (`Generator`): one method that turns a batch
of prompt token ids into a `Rollout`. `TransformersGenerator`, the only one,
runs `generate` on the policy itself (left-padded batch, seeded sampling). A
vLLM backend would implement the same method; it is not written (no GPU to
check it on), see docs/rl.md.
"""

from dataclasses import dataclass
from typing import List, Optional

import torch

from xft.errors import ConfigError, RecordError
from xft.inference.chat import Sampling, cut_at_stop, template_stops
from xft.rl.logprobs import token_logprobs
from xft.rl.rewards import build_rewards, prompt_text, score


@dataclass
class Rollout:
    """A batch of completions. Rows are prompts (left-padded) and their completions
    (right-padded); a completion ends with its stop token when it stopped, and is
    cut at max_new_tokens otherwise."""

    prompt_ids: torch.Tensor  # [B, P] long
    prompt_mask: torch.Tensor  # [B, P] 1 on prompt tokens
    completion_ids: torch.Tensor  # [B, C] long, pad after the end
    completion_mask: torch.Tensor  # [B, C] 1 on completion tokens (stop token included)
    logprobs: torch.Tensor  # [B, C] fp32 log p(token) under the sampling policy; 0 past the end
    texts: List[str]  # completion text, stop text cut (what chat would show)
    stopped: torch.Tensor  # [B] bool: ended by a stop token or string (not by the length cap)
    # Set by RolloutStep.score: [B] weighted total (NaN where nothing scored) and [B, K]
    # per reward function (NaN where it did not score).
    reward: Optional[torch.Tensor] = None
    rewards: Optional[torch.Tensor] = None

    @property
    def lengths(self):
        return self.completion_mask.sum(-1)


def prompt_messages(conversation):
    """The messages to prompt with: `conversation` without its final assistant turn.

    The dropped turn is the record's reference answer; reward functions see the
    record, not the answer text, so nothing else needs it."""
    messages = list(conversation)
    if messages and messages[-1]["role"] == "assistant":
        messages.pop()
    if not messages or messages[-1]["role"] != "user":
        raise RecordError("a prompt must end with a user message (after dropping the final "
                          "assistant turn)", field="messages")
    return messages


def prompt_from_record(record, to_conversation):
    """Prompt messages of a raw record: its `prompt` field (a string, or a list of messages)
    when it has one, else `to_conversation(record)` (the dataset's format map) minus the
    final assistant turn."""
    prompt = record.get("prompt") if isinstance(record, dict) else None
    if prompt is None:
        return prompt_messages(to_conversation(record))
    if isinstance(prompt, str) and prompt.strip():
        messages = [{"role": "user", "content": prompt}]
        if isinstance(record.get("system"), str) and record["system"]:
            messages.insert(0, {"role": "system", "content": record["system"]})
        return messages
    if isinstance(prompt, list):
        return prompt_messages(prompt)
    raise RecordError("must be a non-empty string or a list of messages", field="prompt")


def render_prompt(template, tokenizer, messages):
    """Token ids of `messages` ready for the reply (what `xft chat` feeds generate)."""
    text = template.render(messages, add_generation_prompt=True).text
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def left_pad(rows, pad_id):
    """([B, width] ids, [B, width] mask) of token-id lists, padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


class TransformersGenerator:
    """Generation with transformers' `generate` on the policy model itself.

    `sampling` is xft.inference.chat.Sampling (temperature 0 = greedy; its `seed` is
    unused: each call gets its own `seed`). Sampling draws from a torch RNG forked
    and seeded per call, so a rollout depends only on (weights, prompts, seed):
    resuming a run regenerates exactly what the first run generated, and the
    global RNG (dropout) is left as it was."""

    name = "transformers"

    def __init__(self, tokenizer, template, sampling, max_new_tokens):
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.tokenizer, self.sampling, self.max_new_tokens = tokenizer, sampling, max_new_tokens
        self.stop_texts, self.stop_ids, self.stop_strings = template_stops(tokenizer, template)
        pad_id = tokenizer.pad_token_id
        self.pad_id = pad_id if pad_id is not None else self.stop_ids[0]

    @property
    def temperature(self):
        """The temperature log-probs are taken at (1 for greedy decoding)."""
        return self.sampling.temperature if self.sampling.temperature > 0 else 1.0

    @torch.no_grad()
    def generate(self, model, prompts, seed):
        """A Rollout for `prompts` (lists of token ids) from `model` as it is now."""
        device = next(model.parameters()).device
        prompt_ids, prompt_mask = (t.to(device) for t in left_pad(prompts, self.pad_id))
        extra = ({"stop_strings": self.stop_strings, "tokenizer": self.tokenizer}
                 if self.stop_strings else {})
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                out = model.generate(
                    input_ids=prompt_ids, attention_mask=prompt_mask,
                    max_new_tokens=self.max_new_tokens, eos_token_id=self.stop_ids,
                    pad_token_id=self.pad_id, return_dict_in_generate=True, output_logits=True,
                    **self.sampling.generate_kwargs(), **extra)
        finally:
            model.train(was_training)
        completion_ids = out.sequences[:, prompt_ids.shape[1]:]
        lengths, stopped = zip(*(self._end(row) for row in completion_ids.tolist()))
        width = max(lengths)
        completion_ids = completion_ids[:, :width].clone()
        mask = (torch.arange(width, device=device)[None, :]
                < torch.tensor(lengths, device=device)[:, None])
        completion_ids[~mask] = self.pad_id
        # generate's logits are the model's raw scores, before any logits processor.
        logits = torch.stack(out.logits, dim=1)[:, :width]
        logprobs, _ = token_logprobs(logits, completion_ids, self.temperature)
        texts = [self._text(row[:n]) for row, n in zip(completion_ids.tolist(), lengths)]
        return Rollout(prompt_ids, prompt_mask, completion_ids, mask.long(),
                       logprobs.masked_fill(~mask, 0.0), texts,
                       torch.tensor(stopped, device=device))

    def _end(self, ids):
        """(completion length, stopped) of a generated row: through its first stop token,
        or through the token that completes a stop string, or the whole row."""
        for i, token in enumerate(ids):
            if token in self.stop_ids:
                return i + 1, True
        if self.stop_strings:
            for i in range(len(ids)):
                if cut_at_stop(self.tokenizer.decode(ids[:i + 1]), self.stop_strings)[1]:
                    return i + 1, True
        return len(ids), False

    def _text(self, ids):
        end = next((i for i, token in enumerate(ids) if token in self.stop_ids), len(ids))
        text = self.tokenizer.decode(ids[:end], skip_special_tokens=True)
        return cut_at_stop(text, self.stop_texts)[0]


GENERATORS = {"transformers": TransformersGenerator}


def generator_for(options, tokenizer, template):
    """The generator an RL objective's options ask for (generator, temperature, top_p,
    top_k, max_new_tokens)."""
    sampling = Sampling(options.temperature, options.top_p, options.top_k)
    return build_generator(options.generator, tokenizer, template, sampling,
                           options.max_new_tokens)


class RolloutStep:
    """What a GRPO or PPO step (xft.rl.grpo_step, xft.rl.ppo_step) holds: its checked
    options, the KL reference (xft.model.reference.Reference or None), its rewards and
    its generator."""

    def __init__(self, options, tokenizer, template, reference=None):
        options.check()
        self.options, self.reference = options, reference
        self.rewards = build_rewards(options.rewards)
        self.generator = generator_for(options, tokenizer, template)

    def score(self, rollout, records):
        """Score the rollout's completions (xft.rl.rewards.score), keeping the scores on it;
        `records` are the completions' records (with the prompt conversation in
        'messages'). Returns (total, per function)."""
        questions = [prompt_text(r.get("messages", [])) for r in records]
        rollout.reward, rollout.rewards = score(self.rewards, questions, rollout.texts, records,
                                                rollout.prompt_ids.device)
        return rollout.reward, rollout.rewards


def build_generator(name, tokenizer, template, sampling, max_new_tokens):
    if name == "vllm":
        raise ConfigError("rollout generator 'vllm' is not implemented (it needs a GPU to be "
                          "checked on); use 'transformers' (docs/rl.md)")
    if name not in GENERATORS:
        raise ConfigError(f"rollout generator must be one of {sorted(GENERATORS)}, got {name!r}")
    return GENERATORS[name](tokenizer, template, sampling, max_new_tokens)
