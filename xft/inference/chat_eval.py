"""Evaluation chat: answers to configured prompts before, during and after training.

Uses xft.inference.chat.ChatSession, so the prompt is built by the same template
object that built the training labels. Each prompt is asked in a fresh
conversation (greedy decoding); one JSON line per answer goes to
work_dir/chat_samples.jsonl: {"step", "prompt", "answer"}.
"""

import json
from pathlib import Path

CHAT_SAMPLES_FILE = "chat_samples.jsonl"


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
                with open(self.path, "a", encoding="utf-8") as f:
                    for r in records:
                        f.write(json.dumps(r, ensure_ascii=False) + "\n")
                        self.log(f"chat @ step {step}: {r['prompt']!r} -> {r['answer']!r}")
        finally:
            model.train(was_training)
