"""Evaluation chat: answers to configured prompts before, during and after training.

Uses xft.inference.chat.ChatSession, so the prompt is built by the same template
object that built the training labels. Each prompt is asked in a fresh
conversation (greedy decoding); one JSON line per answer goes to
work_dir/chat_samples.jsonl: {"step", "prompt", "answer"}.

RL runs (objectives 'grpo', 'ppo') add some of their rollouts' completions to the
same file (`RolloutSamples`), marked {"source": "rollout"} and carrying their rewards.
"""

import json
import math
from pathlib import Path

CHAT_SAMPLES_FILE = "chat_samples.jsonl"


def append_lines(path, records):
    """Append one JSON line per record, each written and flushed whole, so that a run
    killed while writing leaves whole lines."""
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()


class RolloutSamples:
    """Writes the first `per_step` completions of each rollout trained at a logged step
    to work_dir/chat_samples.jsonl, one line each: {"step", "source": "rollout", "prompt"
    (the last user message), "answer" (the completion as chat shows it), "reward" (the
    weighted total), "rewards" ({function name: score})}; a score that does not exist
    (the function returned None) is null. `step` is the optimizer step (metrics.jsonl's
    numbering, from 1) that generated them. Only the process with `writes` writes (rank 0,
    its own completions)."""

    def __init__(self, work_dir, per_step, logged, writes=True):
        """`logged(step)`: whether metrics.jsonl gets a record at optimizer step `step`."""
        self.path = Path(work_dir) / CHAT_SAMPLES_FILE
        self.per_step, self.logged, self.writes = per_step, logged, writes

    def due(self, steps):
        """Whether the rollouts trained at these optimizer steps are written."""
        return self.writes and self.per_step > 0 and any(self.logged(s) for s in steps)

    def write(self, step, samples):
        """`samples`: dicts {"prompt", "answer", "reward", "rewards"} in rollout order."""
        append_lines(self.path, [{"step": step, "source": "rollout", **_finite(sample)}
                                 for sample in samples[:self.per_step]])


def _finite(sample):
    """NaN scores (not scored) as None: JSON has no NaN."""
    def clean(value):
        return None if math.isnan(value) else value
    return {**sample, "reward": clean(sample["reward"]),
            "rewards": {name: clean(v) for name, v in sample["rewards"].items()}}


class ChatEvaluator:
    def __init__(self, eval_cfg, tokenizer, template, system, work_dir, writes=True, log=print):
        """`writes`: whether this process writes the answers (rank 0 of a distributed run)."""
        self.prompts, self.interval = eval_cfg.prompts, eval_cfg.interval
        self.max_new_tokens = eval_cfg.max_new_tokens
        self.tokenizer, self.template, self.system = tokenizer, template, system
        self.path = Path(work_dir) / CHAT_SAMPLES_FILE
        self.log, self.writes = log, writes
        self.answered_step = None  # a step is answered once (an evaluation may also ask)

    def due(self, step):
        return bool(self.prompts) and bool(self.interval) and step % self.interval == 0

    def run(self, model, step):
        """Answer every prompt with `model` as it is at optimizer step `step`.

        In a distributed run every rank generates (under ZeRO-3 each forward gathers
        weights from all ranks, so all must take part); rank 0 alone writes."""
        if not self.prompts or step == self.answered_step:
            return
        self.answered_step = step
        from xft.inference.chat import ChatSession

        was_training = model.training
        model.eval()  # no dropout while generating
        session = ChatSession(model, self.tokenizer, self.template, self.system,
                              self.max_new_tokens)
        try:
            records = []
            for prompt in self.prompts:
                session.reset()
                records.append({"step": step, "prompt": prompt, "answer": session.ask(prompt)})
            if self.writes:
                append_lines(self.path, records)
                for r in records:
                    self.log(f"chat @ step {step}: {r['prompt']!r} -> {r['answer']!r}")
        finally:
            model.train(was_training)
