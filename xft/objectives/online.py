"""What the online RL objectives ('grpo', 'ppo') share: prompts as samples, rollouts
seeded per step, updates per rollout, metrics as sums (docs/rl.md).

A sample is a prompt: the record's conversation without its final assistant
turn, rendered by the bound template with the generation prompt (the ids `xft
chat` would feed generate), and the record's reference, stored as UTF-8 JSON
bytes beside the ids so that the dataset cache (int arrays) holds it:
{"answer": the dropped final assistant turn or None, "messages": the prompt}.
Reward functions receive these as `fields` (xft.rl.rewards).

Each micro-batch of prompts goes through `rollout` before it is counted
(xft.engine.step_loss): the objective's step (xft.rl.grpo_step, xft.rl.ppo_step)
generates with a seed derived from (run seed, optimizer step, micro-batch,
rank), so a resumed run regenerates the same completions. With
`updates_per_rollout` K > 1, the completions of step s (s a multiple of K) are
trained for K optimizer steps (the policy moves away from the one that
sampled them, which the clipped ratio bounds); the prompts the sampler hands
out for the K - 1 steps in between are not used. Checkpoints must then fall on
multiples of K, so that a resumed run starts with a fresh rollout.

In a training run the first completions of each rollout trained at a logged step
go to chat_samples.jsonl with their rewards (xft.inference.chat_eval.RolloutSamples,
handed over by the training builder), the same from both engines.

Metrics are logged as sums over the objective's count units (the engines divide
by the step's count): per-completion values (rewards, lengths, advantages) are
weighted by the micro-batch's count.
"""

import json

import torch

from xft.data.conversation import with_system
from xft.data.encode import EncodeStats
from xft.errors import ConfigError, XftError
from xft.model.reference import starting_reference
from xft.objectives.base import LossOutput, Objective
from xft.rl.rewards import build_rewards, prompt_text
from xft.rl.rollout import left_pad, prompt_messages


def check_updates_per_rollout(name, updates, train):
    if not isinstance(updates, int) or updates < 1:
        raise ConfigError(f"'objective.updates_per_rollout' must be an integer >= 1, "
                          f"got {updates!r}")
    if train is not None and updates > 1 and train.save_interval % updates:
        raise ConfigError(f"objective '{name}': 'train.save_interval' ({train.save_interval}) "
                          f"must be a multiple of 'objective.updates_per_rollout' ({updates}), "
                          "so that a resumed run starts with a fresh rollout")


class PromptObjective(Objective):
    """Base of the online RL objectives; subclasses set `step_metrics` (the names their
    step's rollout and loss report) and `kl_option` (the option weighing the KL to the
    reference), make `self.step` in `attach`, and define `count`,
    `step_rollout(model, prompts, records, seed) -> (batch, metrics, Rollout)` and
    `step_loss(model, batch) -> (loss sum, metrics)`."""

    fields = ("prompt_ids", "record")
    length_field = "prompt_ids"
    model_kind = "causal_lm"
    step_metrics = ()
    kl_option = None

    def __init__(self, options=None, train=None):
        super().__init__(options, train)
        self.options.check()
        check_updates_per_rollout(self.name, self.options.updates_per_rollout, train)
        names = [r.name for r in build_rewards(self.options.rewards)] + ["total"]
        self.metric_names = tuple(f"reward/{n}/{s}" for n in names for s in ("mean", "std")) \
            + tuple(self.step_metrics)
        self.step = None  # made in attach (it needs the tokenizer and template)
        self.seed = 0
        self.samples = None  # xft.inference.chat_eval.RolloutSamples, in training runs
        self._rolled = None  # (step, rolled batches) while updates_per_rollout > 1

    # --- data ------------------------------------------------------------------------
    def prepare(self, mapped, template, system):
        if isinstance(mapped, str):
            raise ConfigError(f"objective '{self.name}' needs conversations (prompts), "
                              "not documents")
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
            raise ConfigError(f"objective '{self.name}' does not support data.pack")
        return PromptCollator(pad_token_id)

    def show(self, sample, tokenizer, color=False):
        record = json.loads(bytes(sample["record"]).decode())
        return (tokenizer.decode(sample["prompt_ids"])
                + f"\n[reference answer: {record['answer']!r}]")

    # --- training --------------------------------------------------------------------
    def prepare_model(self, model, method_cfg):
        """The KL reference (xft.model.reference.starting_reference: the disabled adapter,
        the starting adapter, or a frozen copy), when the KL term is on."""
        if getattr(self.options, self.kl_option):
            self.step.reference = starting_reference(model, method_cfg)
        return model

    def rollouts(self, model, batches, step, rank=0):
        """Fresh rollouts on every updates_per_rollout-th step; the same ones in between."""
        updates = self.options.updates_per_rollout
        first = step - step % updates
        if self._rolled is not None and self._rolled[0] == first:
            return self._rolled[1]
        if step != first:
            raise XftError(f"objective '{self.name}': step {step} trains the rollouts of step "
                           f"{first}, which this process did not generate (a checkpoint "
                           f"between rollouts; updates_per_rollout={updates})")
        rolled = super().rollouts(model, batches, step, rank)
        self._rolled = (first, rolled) if updates > 1 else None
        if self.samples is not None and self.samples.due(range(step + 1, step + updates + 1)):
            self.samples.write(step + 1, [s for batch in rolled for s in batch["samples"]])
        return rolled

    def keep_rollout_samples(self, samples):
        self.samples = samples

    def rollout(self, model, batch, step, micro_batch, rank=0):
        """The micro-batch of prompts → completions and what the loss needs (a new batch)."""
        seed = hash((self.seed, step, micro_batch, rank)) & 0x7FFFFFFF
        prompts = [ids[mask.bool()].tolist()
                   for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"])]
        rolled, metrics, rollout = self.step_rollout(model, prompts, batch["records"], seed)
        rolled["rollout_metrics"] = metrics
        rolled["samples"] = rollout_samples(rollout, batch["records"],
                                            [r.name for r in self.step.rewards])
        return rolled

    def completion_mask(self, batch):
        """The rolled-out batch's completion mask (a batch of prompts has none: validation)."""
        if "completion_mask" not in batch:
            raise ConfigError(f"objective '{self.name}' has no held-out loss: remove the "
                              "validation split (data.test_size, val_datasets)")
        return batch["completion_mask"]

    def loss(self, model, batch):
        count = self.count(batch)
        loss_sum, metrics = self.step_loss(model, batch)
        units = count.float()
        sums = {name: torch.as_tensor(value, dtype=torch.float32, device=units.device) * units
                for name, value in {**batch["rollout_metrics"], **metrics}.items()}
        for name in self.metric_names:  # every step logs every metric (e.g. kl when β = 0)
            sums.setdefault(name, torch.zeros((), device=units.device))
        return LossOutput(loss_sum, count, sums)

    def batch_tokens(self, batch):
        if "completion_mask" not in batch:
            return int(batch["prompt_mask"].sum())
        return int(batch["prompt_mask"].sum() + batch["completion_mask"].sum())


def rollout_samples(rollout, records, names):
    """One dict per completion for xft.inference.chat_eval.RolloutSamples; a prompt's
    completions follow each other (GRPO's group), so each record covers len(texts) /
    len(records) of them."""
    repeat = len(rollout.texts) // len(records)
    return [{"prompt": prompt_text(records[i // repeat]["messages"]), "answer": text,
             "reward": rollout.reward[i].item(),
             "rewards": dict(zip(names, rollout.rewards[i].tolist()))}
            for i, text in enumerate(rollout.texts)]


class PromptCollator:
    """Prompts left-padded (generation appends on the right) and their records."""

    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id

    def __call__(self, samples):
        prompt_ids, prompt_mask = left_pad([s["prompt_ids"] for s in samples],
                                           self.pad_token_id)
        records = [json.loads(bytes(s["record"]).decode()) for s in samples]
        return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "records": records}
