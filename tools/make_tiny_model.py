"""Build xft's embedded default model: a tiny Llama and a byte-level BPE tokenizer.

    python tools/make_tiny_model.py [--out xft/assets/tiny-llama]

The model is randomly initialised from a LlamaConfig with a fixed seed (it knows
nothing; fine-tuning is what the demo shows). The tokenizer is trained on the
shipped self-cognition data, so it covers that English and Chinese compactly;
byte-level BPE can still encode any text. The chat
template written into the tokenizer is xft's own `chatml` template, so
`apply_chat_template` and xft render the same tokens.
"""

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from xft.data.templates import template_spec

REPO = Path(__file__).resolve().parent.parent
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 2048
SEED = 0


def corpus():
    records = json.loads((REPO / "xft/assets/data/self_cognition.json").read_text(encoding="utf-8"))
    for record in records:
        yield record["instruction"]
        yield record["output"]


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=template_spec("chatml").to_jinja(), model_max_length=1024)


def build_model(tokenizer):
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=352, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    # The output head is tied to the embeddings and frozen under LoRA, so its
    # row norms cap the logits. With the usual std 0.02 the largest reachable
    # probability over this vocabulary is ~2% and LoRA stalls at the unigram
    # loss. With std 1/sqrt(hidden) a random hidden state gives logits of std ~1
    # (initial loss ~ln(vocab)), while an aligned one reaches logit ~sqrt(hidden).
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, config.hidden_size ** -0.5)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "xft/assets/tiny-llama"))
    args = parser.parse_args()
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    tokenizer.save_pretrained(args.out)
    model.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: vocab {len(tokenizer)}, {n / 1e6:.2f}M parameters")


if __name__ == "__main__":
    main()
