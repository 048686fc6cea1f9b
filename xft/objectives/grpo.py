"""'grpo': online RL with group-normalised advantages (docs/rl.md).

A sample is a prompt: the record's conversation without its final assistant
turn, rendered by the bound template with the generation prompt (the ids `xft
chat` would feed generate), and the record's reference, stored as UTF-8 JSON
bytes beside the ids so that the dataset cache (int arrays) holds it:
{"answer": the dropped final assistant turn or None, "messages": the prompt}.
Reward functions receive these as `fields` (xft.rl.rewards).

Each micro-batch of prompts goes through `rollout` before it is counted
(xft.engine.step_loss): xft.rl.grpo_step generates `group_size` completions per
prompt with a seed derived from (run seed, optimizer step, micro-batch, rank),
so a resumed run regenerates the same completions, scores them and computes
the advantages. `count` is then the normalisation's unit (completions, or
completion tokens, or completions × max_new_tokens) and `loss` the clipped
objective. Metrics are logged as sums over the same units (the engines divide
by the step's count): per-completion values (rewards, lengths, advantages) are
weighted by the micro-batch's count.
"""

import json

import torch

from xft.data.conversation import with_system
from xft.data.encode import EncodeStats
from xft.errors import ConfigError
from xft.objectives.base import LossOutput, Objective, register_objective
from xft.rl.grpo_step import GRPOOptions, GRPOStep
from xft.rl.rewards import build_rewards
from xft.rl.rollout import left_pad, prompt_messages

ROLLOUT_METRICS = ("completion_length", "stopped", "advantage/mean", "advantage/std",
                   "generation_tokens_per_s")
LOSS_METRICS = ("entropy", "clip/low", "clip/high", "kl")


@register_objective
class GRPO(Objective):
    name = "grpo"
    Options = GRPOOptions
    fields = ("prompt_ids", "record")
    length_field = "prompt_ids"
    model_kind = "causal_lm"
    count_key = "count"

    def __init__(self, options=None, train=None):
        super().__init__(options, train)
        self.options.check()
        names = [r.name for r in build_rewards(self.options.rewards)] + ["total"]
        self.metric_names = tuple(f"reward/{n}/{s}" for n in names for s in ("mean", "std")) \
            + ROLLOUT_METRICS + LOSS_METRICS
        self.step = None  # GRPOStep, made in attach (it needs the tokenizer)
        self.seed = 0

    def attach(self, tokenizer, template, seed):
        self.step = GRPOStep(self.options, tokenizer, template)
        self.seed = seed

    # --- data ------------------------------------------------------------------------
    def prepare(self, mapped, template, system):
        if isinstance(mapped, str):
            raise ConfigError("objective 'grpo' needs conversations (prompts), not documents")
        messages = with_system(mapped, system)
        answer = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" \
            else None
        prompt = prompt_messages(messages)
        text = template.render(prompt, add_generation_prompt=True).text
        return text, {"answer": answer, "messages": prompt}

    def encode(self, prepared, tokenizer, max_length, truncation):
        stats = EncodeStats()
        samples = []
        for text, record in prepared:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > max_length:  # a cut prompt would lose the generation prompt
                stats.dropped_too_long += 1
                continue
            samples.append({"prompt_ids": ids,
                            "record": list(json.dumps(record, ensure_ascii=False).encode())})
            stats.samples += 1
            stats.tokens += len(ids)
            stats.lengths.append(len(ids))
        return samples, stats

    def collator(self, pad_token_id, packed):
        if packed:
            raise ConfigError("objective 'grpo' does not support data.pack")
        return PromptCollator(pad_token_id)

    def show(self, sample, tokenizer, color=False):
        record = json.loads(bytes(sample["record"]).decode())
        return (tokenizer.decode(sample["prompt_ids"])
                + f"\n[reference answer: {record['answer']!r}]")

    # --- training --------------------------------------------------------------------
    def rollout(self, model, batch, step, micro_batch, rank=0):
        """The micro-batch of prompts → completions, rewards and advantages (a new batch)."""
        seed = hash((self.seed, step, micro_batch, rank)) & 0x7FFFFFFF
        prompts = [ids[mask.bool()].tolist()
                   for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"])]
        rolled, metrics, rollout = self.step.rollout(model, prompts, batch["records"], seed)
        rolled["rollout_metrics"] = metrics
        rolled["texts"] = rollout.texts
        return rolled

    def count(self, batch):
        if "completion_ids" not in batch:
            raise ConfigError("objective 'grpo' has no held-out loss: remove the validation "
                              "split (data.test_size, val_datasets)")
        mask = batch["completion_mask"]
        kind = self.options.loss_normalization
        if kind == "token":
            return mask.sum()
        rows = torch.tensor(mask.shape[0], device=mask.device)
        return rows * self.options.max_new_tokens if kind == "constant" else rows

    def loss(self, model, batch):
        count = self.count(batch)
        loss_sum, _, metrics = self.step.loss(model, batch)
        units = count.float()
        sums = {name: torch.as_tensor(value, dtype=torch.float32, device=units.device) * units
                for name, value in {**batch["rollout_metrics"], **metrics}.items()}
        for name in self.metric_names:  # every step logs every metric (kl is 0 when β = 0)
            sums.setdefault(name, torch.zeros((), device=units.device))
        return LossOutput(loss_sum, count, sums)

    def batch_tokens(self, batch):
        if "completion_mask" not in batch:
            return int(batch["prompt_mask"].sum())
        return int(batch["prompt_mask"].sum() + batch["completion_mask"].sum())


class PromptCollator:
    """Prompts left-padded (generation appends on the right) and their records."""

    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id

    def __call__(self, samples):
        prompt_ids, prompt_mask = left_pad([s["prompt_ids"] for s in samples],
                                           self.pad_token_id)
        records = [json.loads(bytes(s["record"]).decode()) for s in samples]
        return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "records": records}

