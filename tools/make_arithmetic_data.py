"""Write the toy arithmetic data of the RL demo (docs/rl.md) into xft/assets/data/.

Sums of two digits 0-5, in the `qa` format ({"question": "3+4=", "answer": "7"}):

arithmetic_sft.jsonl       every sum, 10 times, answered right but usually followed by
                           a wrong number ("7 or 2"): an SFT'd model knows the sums
                           and has a habit that the exact-answer reward (last number)
                           punishes
arithmetic_prompts.jsonl   28 sums with clean answers: GRPO's training prompts
arithmetic_heldout.jsonl   the other 8: held-out prompts, never trained on by GRPO
arithmetic_pairs.jsonl     preference pairs (`trl_pairs`) on the 28 prompts for a reward
                           model: chosen the clean answer, rejected the answer with the
                           habit ("7 or 2") or a wrong number ("8")
arithmetic_pairs_heldout.jsonl   the same on the 8 held-out prompts

GRPO can only raise the held-out reward by dropping the habit, a behaviour that is
the same for every prompt, so the demo shows learning that generalises.
Run: python tools/make_arithmetic_data.py
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "xft" / "assets" / "data"
HABIT = 0.7  # share of SFT answers followed by a wrong number


def write(name, records):
    with open(OUT / name, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def main():
    rng = random.Random(0)
    pairs = [(a, b) for a in range(6) for b in range(6)]
    sft = []
    for _ in range(10):
        for a, b in pairs:
            answer = str(a + b)
            if rng.random() < HABIT:
                wrong = rng.choice([n for n in range(11) if n != a + b])
                answer = f"{answer} or {wrong}"
            sft.append({"question": f"{a}+{b}=", "answer": answer})
    rng.shuffle(sft)
    write("arithmetic_sft.jsonl", sft)
    rng.shuffle(pairs)
    clean = [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in pairs]
    write("arithmetic_prompts.jsonl", clean[:28])
    write("arithmetic_heldout.jsonl", clean[28:])
    write("arithmetic_pairs.jsonl", preference_pairs(clean[:28], rng))
    write("arithmetic_pairs_heldout.jsonl", preference_pairs(clean[28:], rng))


def preference_pairs(records, rng, per_kind=2):
    """For each prompt, `per_kind` pairs whose rejected side has the habit and `per_kind`
    whose rejected side is a wrong number; chosen is always the clean answer."""
    pairs = []
    for record in records:
        right = int(record["answer"])
        for _ in range(per_kind):
            habit = f"{right} or {rng.choice([n for n in range(11) if n != right])}"
            wrong = str(rng.choice([n for n in range(11) if n != right]))
            for rejected in (habit, wrong):
                pairs.append({"prompt": record["question"], "chosen": record["answer"],
                              "rejected": rejected})
    return pairs


if __name__ == "__main__":
    main()
