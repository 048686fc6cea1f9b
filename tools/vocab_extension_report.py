"""Measure a vocabulary extension on real data and draw docs/images/vocab_extension.png.

Merges ../shared/data/tokenizers/chinese_sp into the Mistral v0.3 tokenizer twice (digits
kept split as Mistral does, the default; and every piece, the Chinese-LLaMA recipe) and
compares tokens per character on alpaca_zh_demo (every non-empty instruction, input and
output) with the base tokenizer.

    python tools/vocab_extension_report.py [--shared ../shared/data] [--out docs/images/...]
"""

import argparse
import json
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from xft.tools.vocab import merge_tokenizer

REPO = Path(__file__).resolve().parent.parent


def tokens_per_char(tokenizer, texts):
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return sum(lengths) / sum(map(len, texts)), [n / len(t) for n, t in zip(lengths, texts)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "docs" / "images" / "vocab_extension.png"))
    args = parser.parse_args()
    shared = Path(args.shared)
    base_dir = shared / "tokenizers" / "mistral-7b-instruct-v0.3"
    add = shared / "tokenizers" / "chinese_sp" / "chinese_sp.model"
    records = json.loads((shared / "datasets/alpaca/alpaca_zh_demo.json").read_text("utf-8"))
    texts = [r[k] for r in records for k in ("instruction", "input", "output") if r[k]]

    results = {"Mistral v0.3": tokens_per_char(AutoTokenizer.from_pretrained(base_dir), texts)}
    with tempfile.TemporaryDirectory() as tmp:
        for label, keep in (("+ chinese_sp (digits split)", False),
                            ("+ chinese_sp (all pieces)", True)):
            report = merge_tokenizer(base_dir, add, Path(tmp) / label, keep)
            tokenizer = AutoTokenizer.from_pretrained(Path(tmp) / label)
            results[f"{label}\n{report.size} tokens"] = tokens_per_char(tokenizer, texts)
    base = next(iter(results.values()))[0]
    for label, (tpc, _) in results.items():
        print(f"{label.replace(chr(10), ', ')}: {tpc:.3f} tokens/char "
              f"({1 - tpc / base:.1%} fewer tokens)")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels, colors = list(results), ["grey", "C0", "C1"]
    left.bar(range(len(labels)), [results[k][0] for k in labels], color=colors)
    for i, k in enumerate(labels):
        tpc = results[k][0]
        left.text(i, tpc, f"{tpc:.3f}" + (f"\n−{1 - tpc / base:.1%}" if i else ""),
                  ha="center", va="bottom")
    left.set_xticks(range(len(labels)), [k.replace("Mistral v0.3\n", "") for k in labels],
                    fontsize=8)
    left.set_ylabel("tokens per character")
    left.set_ylim(0, base * 1.25)
    left.set_title(f"alpaca_zh_demo ({len(texts)} texts)")
    for k, color in zip(labels, colors):
        right.hist(results[k][1], bins=50, range=(0, 2), histtype="step", color=color,
                   label=k.split("\n")[0])
    right.set_xlabel("tokens per character of one text")
    right.set_ylabel("texts")
    right.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
