"""method.init_adapter: LoRA continues from an existing adapter (e.g. an SFT run's)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from xft.config.schema import MethodCfg, ModelCfg, _check_method
from xft.errors import ConfigError
from xft.model.methods import apply_method
from xft.paths import resolve_path

TINY = resolve_path("xft://tiny-llama")


def tiny():
    return AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)


def test_lora_continues_from_the_saved_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    saved = get_peft_model(tiny(), LoraConfig(r=4, target_modules=["q_proj"],
                                              init_lora_weights=False))
    saved.save_pretrained(tmp_path / "sft")
    want = {n: p for n, p in saved.named_parameters() if "lora_" in n}
    # The config's own r/target_modules are not used: the adapter's are.
    model = apply_method(tiny(), MethodCfg(type="lora", r=64, init_adapter=str(tmp_path / "sft")))
    got = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name])
        assert got[name].requires_grad


def test_bad_init_adapter_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="method.init_adapter"):
        apply_method(tiny(), MethodCfg(type="lora", init_adapter=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="init_adapter' applies to method.type='lora'"):
        _check_method(MethodCfg(type="full", init_adapter="x"), ModelCfg(path="x"))
