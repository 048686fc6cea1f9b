"""docs/incremental_pretraining.md end to end, on a tiny model and corpus, with the shipped
configs: extend the vocabulary → pretrain on raw text with the embeddings trained → merge
the adapter → SFT on the result → chat."""

import json
import math
from pathlib import Path

import pytest
import torch
from test_vocab import ZH, make_spm_base, make_tiny_llama, write_jsonl
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from xft.cli import main
from xft.engine.train import train
from xft.tools.chat import load_chat_model
from xft.tools.pth_to_hf import pth_to_hf

STAGE1 = "mistral_7b_v0_3_zh_vocab_lora_pretrain_e1"
STAGE2 = "mistral_7b_v0_3_zh_vocab_lora_alpaca_zh_e3"
TINY_RUN = {"train.max_steps": 3, "train.batch_size": 2, "train.grad_accum": 1,
            "train.log_interval": 1, "model.dtype": "float32", "data.max_length": 64,
            "model.gradient_checkpointing": False}


def merge_adapter(base_dir, adapter_dir, out_dir):
    """Stage 1's adapter merged into its base (the step `xft convert merge` does): the base
    grows to the extended tokenizer, then peft loads the adapter's resized embeddings."""
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


def losses(work_dir):
    return [json.loads(line)["loss"] for line in (work_dir / "metrics.jsonl").open()]


@pytest.mark.slow
def test_extend_pretrain_sft_chat(tmp_path, capsys):
    base = make_spm_base(tmp_path / "base")
    corpus = write_jsonl(tmp_path / "zh.jsonl", ZH)
    assert main(["vocab", "train", "--corpus", str(corpus), "--vocab-size", "200",
                 "--out", str(tmp_path / "zh_sp")]) == 0
    tokenizer_dir = tmp_path / "zh_tokenizer"
    assert main(["vocab", "merge", "--base", str(base), "--add", str(tmp_path / "zh_sp"),
                 "--out", str(tokenizer_dir)]) == 0
    base_size = len(AutoTokenizer.from_pretrained(base))
    size = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    assert size > base_size
    model_dir = make_tiny_llama(tmp_path / "model", base_size)

    # Stage 1: raw Chinese text; the new rows start at their pieces' mean and train.
    stage1_options = {
        **TINY_RUN, "model.path": str(model_dir), "tokenizer.path": str(tokenizer_dir),
        "model.resize_vocab.base_tokenizer": str(base),
        "datasets": [dict(path=str(corpus), format="pretrain")]}
    stage1 = train(STAGE1, work_dir=tmp_path / "stage1", cfg_options=stage1_options)
    assert all(math.isfinite(x) for x in losses(tmp_path / "stage1"))
    # Regression (issue 13): `xft convert pth_to_hf` of a model.resize_vocab config failed
    # with "model.resize_vocab needs the tokenizer"; it now builds as training did.
    converted = pth_to_hf(STAGE1, tmp_path / "stage1" / "iter_3.pth", tmp_path / "converted",
                          cfg_options=stage1_options, log=lambda *_: None)
    exported, rebuilt = (load_file(Path(d) / "adapter_model.safetensors")
                         for d in (stage1, converted))
    assert exported.keys() == rebuilt.keys() and any("embed_tokens" in k for k in exported)
    for name in exported:
        torch.testing.assert_close(rebuilt[name], exported[name], rtol=0, atol=0)
    merged_dir = tmp_path / "stage1_merged"
    merged = merge_adapter(model_dir, stage1, merged_dir)
    assert merged.get_input_embeddings().weight.shape[0] == size
    assert merged.get_output_embeddings().weight.shape[0] == size

    # Stage 2: instruction data on the merged model; its tokenizer is the extended one.
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"instruction_zh": q, "input_zh": "", "output_zh": a},
                                      ensure_ascii=False) + "\n"
                           for q, a in zip(ZH[::2], ZH[1::2])), encoding="utf-8")
    stage2 = train(STAGE2, work_dir=tmp_path / "stage2", cfg_options={
        **TINY_RUN, "model.path": str(merged_dir),
        "datasets": [dict(path=str(sft), format="alpaca_zh")]})
    assert all(math.isfinite(x) for x in losses(tmp_path / "stage2"))

    # Chat with the SFT adapter over the merged model: the extended tokenizer and the
    # matching embeddings are what it loads.
    model, tokenizer, template = load_chat_model(str(stage2))
    assert len(tokenizer) == size and template.name == "mistral_v3"
    assert model.get_input_embeddings().weight.shape[0] == size
    capsys.readouterr()
    assert main(["chat", str(stage2), "--prompt", ZH[0], "--max-new-tokens", "8"]) == 0
    answer = capsys.readouterr().out
    assert answer.endswith("\n")
    # Chat runs the stage-2 weights, not the merged stage-1 model.
    with torch.no_grad():
        ids = torch.tensor([tokenizer(ZH[0])["input_ids"]])
        assert not torch.allclose(model(ids).logits, merged(ids).logits)
