"""Exported artifacts stop where training taught the model to stop (stock transformers only).

The model here is a tiny Llama whose base EOS is '<|endoftext|>' while its ChatML
template ends a turn with '<|im_end|>' (a Qwen2 base SFT'd with a chat template).
Its weights are set so that it is a bigram machine: after the generation prompt it
says 'Hello', then '<|im_end|>', then 'Hello' again, forever. Stock `generate()` on
the exported folder must stop at '<|im_end|>'; with the base's generation config it
runs on (the bug this guards against).
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import DEMO_CONFIG, REPO, run_cli, successor_model

from xft.data.templates import TEMPLATES, get_template
from xft.data.templates.stops import turn_end_ids
from xft.engine.export import export_hf

TINY = REPO / "xft" / "assets" / "tiny-llama"
PROMPT = [{"role": "user", "content": "Hi"}]

STOCK_GENERATE = r'''
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
path, mode, max_new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
if mode == "adapter":
    from peft import PeftModel
    model = PeftModel.from_pretrained(model, sys.argv[3])
ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}],
                                    add_generation_prompt=True, return_tensors="pt",
                                    return_dict=True)["input_ids"]
config = GenerationConfig.from_pretrained(sys.argv[3] if mode == "adapter" else path)
if mode == "base_eos":
    config.eos_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
out = model.generate(ids, generation_config=config, max_new_tokens=max_new_tokens,
                     do_sample=False)
assert not any(m == "xft" or m.startswith("xft.") for m in sys.modules), "xft was imported"
print(json.dumps(tokenizer.decode(out[0, ids.shape[1]:])))
'''


def stock_generate(path, mode="model", adapter=None, max_new_tokens=8):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", STOCK_GENERATE, str(path), mode,
                             str(adapter or ""), str(max_new_tokens)], env=env,
                            capture_output=True, text=True, cwd=path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def bigram_model(tokenizer):
    """A Llama whose next token depends only on the current one: prompt end → 'Hello' →
    '<|im_end|>' → 'Hello' → ... Its base EOS is '<|endoftext|>'."""
    prompt = get_template("chatml", tokenizer).render(PROMPT, add_generation_prompt=True).text
    last = tokenizer(prompt, add_special_tokens=False)["input_ids"][-1]
    hello, = tokenizer("Hello", add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return successor_model(len(tokenizer), {last: hello, hello: end, end: hello}, eos_id=0)


@pytest.fixture()
def tokenizer():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    tokenizer.eos_token = "<|endoftext|>"  # the base's EOS, not the template's turn end
    return tokenizer


def test_turn_end_ids_are_the_tokens_that_close_a_trained_reply(tokenizer):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert turn_end_ids(get_template("chatml", tokenizer), tokenizer) == [end]
    # 'default' closes a reply with the tokenizer's EOS.
    assert turn_end_ids(get_template("default", tokenizer), tokenizer) == [0]


@pytest.mark.slow
def test_exported_model_stops_at_the_turn_end_with_stock_generate(tokenizer, tmp_path):
    model = bigram_model(tokenizer)
    out = export_hf(model, tokenizer, get_template("chatml", tokenizer), tmp_path / "hf")
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [0, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert json.loads((out / "config.json").read_text())["use_cache"] is True
    assert stock_generate(out) == "Hello<|im_end|>"
    # The control: with only the base's EOS, generation runs past the end of the answer.
    assert stock_generate(out, "base_eos").startswith("Hello<|im_end|>Hello")


@pytest.mark.slow
def test_exported_adapter_and_its_merge_stop_at_the_turn_end(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    from xft.tools.merge import merge_adapter

    base = bigram_model(tokenizer)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    adapter = export_hf(model, tokenizer, get_template("chatml", tokenizer), tmp_path / "hf")
    assert stock_generate(tmp_path / "base", "adapter", adapter) == "Hello<|im_end|>"
    merged = merge_adapter(tmp_path / "base", adapter, tmp_path / "merged", log=lambda *_: None)
    assert stock_generate(merged) == "Hello<|im_end|>"


@pytest.mark.parametrize("name", sorted(n for n in TEMPLATES if n != "auto"))
def test_every_template_has_end_of_turn_ids_that_close_its_replies(name):
    from test_templates import FAMILY_TOKENS, family_tokenizer

    tokenizer = family_tokenizer(name if name in FAMILY_TOKENS else "mistral")
    template = get_template(name, tokenizer)
    ids = turn_end_ids(template, tokenizer)
    assert ids
    rendered = template.render([{"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello"}])
    start, end = rendered.loss_spans[-1]
    trained = tokenizer(rendered.text[start:end], add_special_tokens=False)["input_ids"]
    stops = set(ids) - {tokenizer.convert_tokens_to_ids(w) for w in template.stop_words}
    assert stops <= set(trained)  # each one is a token the model is trained to write


@pytest.mark.slow
def test_a_model_fine_tuned_with_xft_stops_at_its_turn_end_with_stock_generate(tmp_path):
    """Train to stop, end to end: a base whose EOS ('<|endoftext|>') is not the chat
    template's turn end ('<|im_end|>') is LoRA-tuned by `xft train` (the README demo), merged
    by `xft convert merge`; stock generate() on the artifacts answers and stops at the turn
    end, where the base's generation config runs past it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "base"
    tokenizer = AutoTokenizer.from_pretrained(TINY)
    tokenizer.eos_token = "<|endoftext|>"
    model = AutoModelForCausalLM.from_pretrained(TINY)
    model.config.eos_token_id = model.generation_config.eos_token_id = \
        tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    work = tmp_path / "work"
    run_cli("train", DEMO_CONFIG, "--work-dir", str(work), "--cfg-options",
            f"model.path={base}", "train.max_steps=60")
    adapter = work / "hf"
    end = "<|im_end|>"
    answer = stock_generate(base, "adapter", adapter, max_new_tokens=48)
    assert "Tuna" in answer and answer.endswith(end) and answer.count(end) == 1, answer
    run_cli("convert", "merge", str(base), str(adapter), str(tmp_path / "merged"))
    assert stock_generate(tmp_path / "merged", max_new_tokens=48) == answer
    # The control: with the base's EOS alone, generation runs past the end of the answer.
    assert stock_generate(tmp_path / "merged", "base_eos", max_new_tokens=48) != answer
