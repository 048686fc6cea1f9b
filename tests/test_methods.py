"""Training methods on the embedded tiny model: which weights train, how they compute, and
that a few optimizer steps learn. References: the plain model's own modules, peft's LoRA+
grouping, LoRA/DoRA formulas written out, and bitsandbytes' dequantized weights."""

import json
import math
import sys

import pytest
import torch

from xft.config.schema import OptimCfg, validate
from xft.errors import ConfigError
from xft.model.build import build_model, build_tokenizer, load_causal_lm
from xft.model.optimizer import build_optimizer, trainable_parameter_groups

TINY = "xft://tiny-llama"
PEFT_PREFIX = "base_model.model."
NF4 = {"bits": 4, "quant_type": "nf4", "double_quant": True}
FP4 = {"bits": 4, "quant_type": "fp4", "double_quant": False}
INT8 = {"bits": 8}
LORA = {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0}


def experiment(method=None, **model):
    return validate({"model": {"path": TINY, **model}, "datasets": [{"path": "unused.json"}],
                     "template": "chatml", "method": method or {}})


def build(method=None, seed=0, **model):
    torch.manual_seed(seed)
    exp = experiment(method, **model)
    return build_model(exp.model, exp.method)


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def batch():
    return torch.randint(3, 610, (2, 24), generator=torch.Generator().manual_seed(0))


def loss_of(model, ids):
    return model(input_ids=ids, labels=ids).loss


def randomize_lora_b(model, seed=1):
    """peft starts B at zero (adapter = identity); give it values so A gets gradients too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


def plain_linear_names():
    """Every nn.Linear of the plain model but the output head: what 'all-linear' targets."""
    plain = load_causal_lm(TINY)
    return [n for n, m in plain.named_modules()
            if isinstance(m, torch.nn.Linear) and n != "lm_head"]


def lora_names(module_names):
    return {f"{PEFT_PREFIX}{m}.lora_{ab}.default.weight" for m in module_names for ab in "AB"}


# --- which parameters train -------------------------------------------------------------

@pytest.mark.slow
def test_full_trains_every_parameter():
    model = build({"type": "full"})
    assert trainable(model) == {n for n, _ in model.named_parameters()}


@pytest.mark.slow
def test_lora_all_linear_trains_exactly_the_adapters_of_every_linear_layer():
    model = build(LORA)
    linears = plain_linear_names()
    assert len(linears) == 4 * 7  # 4 layers × (q, k, v, o, gate, up, down)
    assert trainable(model) == lora_names(linears)


@pytest.mark.slow
def test_lora_listed_modules_only():
    model = build({**LORA, "target_modules": ["q_proj", "v_proj"]})
    chosen = [n for n in plain_linear_names() if n.endswith(("q_proj", "v_proj"))]
    assert trainable(model) == lora_names(chosen)


@pytest.mark.slow
@pytest.mark.parametrize("quant", [NF4, INT8], ids=["nf4", "int8"])
def test_qlora_trains_the_same_adapters_as_lora(quant):
    assert trainable(build(LORA, quantization=quant)) == lora_names(plain_linear_names())


@pytest.mark.slow
def test_freeze_trains_top_layers_head_and_named_modules():
    model = build({"type": "freeze", "trainable_layers": 1, "train_head": True,
                   "modules_to_save": ["norm"]})
    head = next(n for n, p in model.named_parameters() if p is model.lm_head.weight)
    top = {n for n, _ in model.named_parameters() if n.startswith("model.layers.3.")}
    assert top and trainable(model) == top | {head, "model.norm.weight"}
    model = build({"type": "freeze", "trainable_layers": 2})
    assert trainable(model) == {n for n, _ in model.named_parameters()
                                if n.startswith(("model.layers.2.", "model.layers.3."))}


@pytest.mark.slow
def test_freeze_rejects_more_layers_than_the_model_has_and_unknown_modules():
    with pytest.raises(ConfigError, match="trainable_layers' is 5 but the model has 4"):
        build({"type": "freeze", "trainable_layers": 5})
    with pytest.raises(ConfigError, match="no module named 'embedding'"):
        build({"type": "freeze", "modules_to_save": ["embedding"]})


@pytest.mark.slow
def test_lora_modules_to_save_trains_a_tied_embedding_copy_and_exports_it(tmp_path):
    from peft import PeftModel

    from xft.data.templates import get_template
    from xft.engine.export import export_hf

    exp = experiment({**LORA, "modules_to_save": ["embed_tokens", "lm_head"]})
    torch.manual_seed(0)
    model = build_model(exp.model, exp.method)
    inner = model.base_model.model
    embed_copy = f"{PEFT_PREFIX}model.embed_tokens.modules_to_save.default.weight"
    # tiny-llama ties lm_head to embed_tokens: one trained copy, still tied.
    assert trainable(model) == lora_names(plain_linear_names()) | {embed_copy}
    assert (inner.lm_head.modules_to_save["default"].weight
            is inner.model.embed_tokens.modules_to_save["default"].weight)
    train_steps(model, exp, steps=2, lr=1e-2)
    tokenizer = build_tokenizer(exp.tokenizer, exp.model.path)
    out = export_hf(model, tokenizer, get_template("chatml", tokenizer), tmp_path / "hf")
    loaded = PeftModel.from_pretrained(load_causal_lm(TINY), str(out)).eval()
    model.eval()
    ids = batch()
    with torch.no_grad():
        assert not torch.equal(loaded.get_input_embeddings().weight, load_causal_lm(
            TINY).get_input_embeddings().weight)
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


# --- LoRA variants reach peft and compute what they should -------------------------------

@pytest.mark.slow
def test_lora_options_reach_the_saved_adapter_config(tmp_path):
    model = build({"type": "lora", "r": 4, "alpha": 12, "dropout": 0.1, "use_dora": True,
                   "use_rslora": True, "target_modules": ["q_proj", "down_proj"]})
    model.save_pretrained(str(tmp_path))
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"], saved["lora_dropout"]) == (4, 12, 0.1)
    assert saved["use_dora"] is True and saved["use_rslora"] is True
    assert set(saved["target_modules"]) == {"q_proj", "down_proj"}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["plain", "rslora", "dora"])
def test_lora_layer_forward_matches_the_written_out_formula(variant):
    r, alpha = 4, 8
    model = build({**LORA, "r": r, "alpha": alpha, "use_rslora": variant == "rslora",
                   "use_dora": variant == "dora"})
    randomize_lora_b(model)
    layer = model.get_submodule(f"{PEFT_PREFIX}model.layers.0.self_attn.q_proj")
    W = layer.base_layer.weight
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(3, W.shape[1], generator=torch.Generator().manual_seed(2))
    plain = x @ (W + (alpha / r) * B @ A).T
    if variant == "plain":
        expected = plain
    elif variant == "rslora":
        expected = x @ (W + (alpha / math.sqrt(r)) * B @ A).T
    else:  # DoRA: each output row rescaled to the magnitude vector m (initialised to |W| rows)
        merged = W + (alpha / r) * B @ A
        m = layer.lora_magnitude_vector["default"].weight
        torch.testing.assert_close(m, W.norm(dim=1))
        expected = (x @ merged.T) * (m / merged.norm(dim=1))
    with torch.no_grad():
        out = layer(x)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        if variant != "plain":  # the variant really changes the forward at the same weights
            assert (out - plain).abs().max() > 1e-3


# --- LoRA+ ------------------------------------------------------------------------------

@pytest.mark.slow
def test_loraplus_groups_match_peft_and_carry_their_own_lr():
    from peft.optimizers import create_loraplus_optimizer

    from xft.engine.mmengine_model import StepLR

    exp = experiment({**LORA, "use_dora": True, "loraplus_lr_ratio": 16})
    model = build_model(exp.model, exp.method)
    optim_cfg = OptimCfg(lr=1e-4)
    groups = trainable_parameter_groups(model, optim_cfg, exp.method)
    assert [g["lr"] for g in groups] == [pytest.approx(1e-4, rel=1e-12),
                                         pytest.approx(1.6e-3, rel=1e-12)]
    names = {id(p): n for n, p in model.named_parameters()}
    slow, fast = ({names[id(p)] for p in g["params"]} for g in groups)
    assert slow == {n for n in trainable(model) if "lora_A" in n}
    assert fast == {n for n in trainable(model) if "lora_B" in n or "lora_magnitude" in n}
    # peft's own LoRA+ optimizer puts the same tensors at the same lrs.
    reference = create_loraplus_optimizer(model, torch.optim.AdamW, lr=1e-4, loraplus_lr_ratio=16)
    by_lr = {}
    for g in reference.param_groups:
        by_lr.setdefault(round(g["lr"], 12), set()).update(names[id(p)] for p in g["params"])
    assert by_lr[1e-4] == slow and by_lr[1.6e-3] == fast
    # xft's schedule scales every group by the same factor, so the ratio holds.
    optimizer = build_optimizer(model, optim_cfg, exp.method)
    scheduler = StepLR(optimizer, total_steps=10, warmup_steps=2, kind="cosine")
    seen = set()
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        slow_lr, fast_lr = (g["lr"] for g in optimizer.param_groups)
        assert fast_lr == pytest.approx(16 * slow_lr, rel=1e-9)
        seen.add(slow_lr)
    assert len(seen) >= 4 and 0 < min(seen) < max(seen) <= 1e-4  # warmup, then decay


@pytest.mark.slow
def test_without_loraplus_there_is_one_group_at_the_base_lr():
    exp = experiment(LORA)
    groups = trainable_parameter_groups(build_model(exp.model, exp.method), OptimCfg(lr=3e-4), exp.method)
    assert len(groups) == 1 and groups[0]["lr"] == 3e-4


# --- every method learns -----------------------------------------------------------------

def train_steps(model, exp, steps, lr):
    optimizer = build_optimizer(model, OptimCfg(lr=lr), exp.method)
    model.train()
    ids = batch()
    losses = []
    for _ in range(steps):
        loss = loss_of(model, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("method,model_kwargs", [
    ({"type": "full"}, {}),
    (LORA, {}),
    ({**LORA, "use_dora": True}, {}),
    ({**LORA, "use_rslora": True}, {}),
    ({**LORA, "loraplus_lr_ratio": 8}, {}),
    ({"type": "freeze", "trainable_layers": 1, "train_head": True}, {}),
    (LORA, {"quantization": NF4}),
    (LORA, {"quantization": FP4}),
    (LORA, {"quantization": INT8}),
], ids=["full", "lora", "dora", "rslora", "loraplus", "freeze", "qlora-nf4", "qlora-fp4",
        "qlora-int8"])
def test_a_few_steps_reduce_the_loss(method, model_kwargs):
    exp = experiment(method, **model_kwargs)
    torch.manual_seed(0)
    losses = train_steps(build_model(exp.model, exp.method), exp, steps=6, lr=1e-2)
    assert losses[-1] < losses[0] - 0.1, losses


# --- gradient checkpointing ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method,model_kwargs", [
    ({"type": "full"}, {}), (LORA, {}), (LORA, {"quantization": NF4})],
    ids=["full", "lora", "qlora"])
def test_gradient_checkpointing_gives_the_same_gradients(method, model_kwargs):
    ids = batch()
    grads = []
    for checkpointing in (False, True):
        model = build(method, gradient_checkpointing=checkpointing, **model_kwargs)
        base = model.get_base_model() if method["type"] == "lora" else model
        assert base.is_activation_checkpointing == checkpointing
        randomize_lora_b(model)
        model.train()
        loss_of(model, ids).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    without, with_ = grads
    assert without.keys() == with_.keys()
    for name in without:
        assert without[name] is not None and without[name].abs().sum() > 0, name
        torch.testing.assert_close(with_[name], without[name], rtol=1e-5, atol=1e-6)


# --- quantization ---------------------------------------------------------------------------

def quantized_and_reference(quant):
    """(QLoRA model at init, where LoRA adds nothing; fp32 model holding the dequantized
    weights of every quantized layer; the original fp32 model's logits).

    The QLoRA model stays in train mode (no dropout anywhere): in eval mode on CPUs with
    AVX512-BF16, bitsandbytes 0.50 repacks 4-bit weights for a bf16 inference kernel,
    which fails for in_features not a multiple of 64 (tiny-llama's down_proj: 352)."""
    model = build(LORA, quantization=quant).train()
    reference = load_causal_lm(TINY).eval()
    with torch.no_grad():
        original = reference(input_ids=batch()).logits
    return model, reference, original


@pytest.mark.slow
@pytest.mark.parametrize("quant", [NF4, FP4, {**NF4, "double_quant": False}],
                         ids=["nf4-dq", "fp4", "nf4"])
def test_4bit_forward_matches_the_dequantized_weights(quant):
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    model, reference, original = quantized_and_reference(quant)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(layers) == len(plain_linear_names())
    with torch.no_grad():
        for name, layer in layers.items():
            state = layer.weight.quant_state
            assert state.quant_type == quant["quant_type"]
            assert bool(state.nested) == quant["double_quant"]
            target = name.removeprefix(PEFT_PREFIX).removesuffix(".base_layer")
            reference.get_submodule(target).weight.copy_(dequantize_4bit(layer.weight.data, state))
        logits, expected = model(input_ids=batch()).logits, reference(input_ids=batch()).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert (logits - original).abs().max() > 1e-3  # the weights really were quantized


@pytest.mark.slow
def test_8bit_forward_matches_the_dequantized_weights():
    import bitsandbytes as bnb

    model, reference, original = quantized_and_reference(INT8)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)}
    assert len(layers) == len(plain_linear_names())
    with torch.no_grad():
        for name, layer in layers.items():
            assert layer.weight.dtype == torch.int8
            # LLM.int8: row-wise absmax scales, W ≈ int8 * SCB / 127
            weight = layer.weight.data.float() * layer.weight.SCB[:, None] / 127
            target = name.removeprefix(PEFT_PREFIX).removesuffix(".base_layer")
            reference.get_submodule(target).weight.copy_(weight)
        logits, expected = model(input_ids=batch()).logits, reference(input_ids=batch()).logits
    # In training mode bitsandbytes' CPU path multiplies by the dequantized weights.
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert (logits - original).abs().max() > 5e-3  # the weights really were quantized
    # In eval mode (and on GPU) LLM.int8 also quantizes the activations (per row, from fp16).
    model.eval()
    with torch.no_grad():
        int8_logits = model(input_ids=batch()).logits
    error = (int8_logits - expected).abs().max()
    assert 0 < error < 0.02 * expected.abs().max()


@pytest.mark.slow
def test_8bit_cast_warning_is_logged_once(caplog, monkeypatch):
    import logging

    from xft.model.quant import BNB_INT8_LOGGER

    # The filter is per process; start from none, as a fresh run does.
    monkeypatch.setattr(logging.getLogger(BNB_INT8_LOGGER), "filters", [])
    model = build(LORA, quantization=INT8).eval()
    with torch.no_grad(), caplog.at_level("WARNING"):
        model(input_ids=batch())
        model(input_ids=batch())
    casts = [r for r in caplog.records if "inputs will be cast" in r.getMessage()]
    assert len(casts) == 1


@pytest.mark.slow
def test_qlora_adapter_loads_with_stock_peft_on_a_full_precision_base(tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from xft.data.templates import get_template
    from xft.engine.export import export_hf

    exp = experiment(LORA, quantization=NF4)
    torch.manual_seed(0)
    model = build_model(exp.model, exp.method)
    train_steps(model, exp, steps=2, lr=1e-2)
    tokenizer = build_tokenizer(exp.tokenizer, exp.model.path)
    out = export_hf(model, tokenizer, get_template("chatml", tokenizer), tmp_path / "hf")
    saved = load_file(str(out / "adapter_model.safetensors"))
    # Only the adapter is saved, in full precision; nothing of the quantized base.
    assert {k.replace("base_model.model.", "", 1) for k in saved} == {
        n.removeprefix(PEFT_PREFIX).replace(".default", "") for n in trainable(model)}
    assert all(t.dtype == torch.float32 for t in saved.values())
    loaded = PeftModel.from_pretrained(load_causal_lm(TINY), str(out))
    trained = dict(model.named_parameters())
    for name, p in loaded.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(p, trained[name], rtol=0, atol=0)
    # On the unquantized base the adapter gives nearly the QLoRA model's logits
    # (train mode, no dropout: see quantized_and_reference).
    with torch.no_grad():
        logits, qlogits = loaded(input_ids=batch()).logits, model(input_ids=batch()).logits
    assert (logits - qlogits).abs().max() < 0.1 * qlogits.abs().max()


@pytest.mark.slow
def test_missing_bitsandbytes_is_a_config_error_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    with pytest.raises(ConfigError, match=r"pip install 'xft\[qlora\]'"):
        build(LORA, quantization=NF4)


# --- config checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("method,model_kwargs,message", [
    ({"type": "full"}, {"quantization": NF4}, "needs method.type='lora'"),
    ({"type": "freeze", "use_dora": True}, {}, "'method.use_dora' applies to method.type='lora'"),
    ({"type": "full", "loraplus_lr_ratio": 4}, {}, "loraplus_lr_ratio' applies to"),
    ({"type": "full", "modules_to_save": ["lm_head"]}, {}, "modules_to_save' is meaningless"),
    ({**LORA, "loraplus_lr_ratio": 0}, {}, "must be > 0"),
    (LORA, {"quantization": {"bit": 4}}, "'model.quantization.bit'; did you mean 'bits'"),
    (LORA, {"quantization": {"bits": 3}}, r"must be one of \[4, 8\]"),
    (LORA, {"quantization": {"quant_type": "nf8"}}, "did you mean 'nf4'"),
])
def test_invalid_method_configs_fail_with_the_key(method, model_kwargs, message):
    with pytest.raises(ConfigError, match=message):
        experiment(method, **model_kwargs)


# --- GPU: mixed precision ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_lora_on_gpu_keeps_fp32_adapters_and_learns(dtype):
    exp = experiment(LORA, dtype=dtype)
    model = build_model(exp.model, exp.method).cuda()
    assert model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.dtype \
        == getattr(torch, dtype)
    assert {p.dtype for n, p in model.named_parameters() if p.requires_grad} == {torch.float32}
    optimizer = build_optimizer(model, OptimCfg(lr=1e-2), exp.method)
    ids = batch().cuda()
    losses = []
    for _ in range(6):
        loss = loss_of(model, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


@pytest.mark.slow
@pytest.mark.gpu
def test_qlora_on_gpu_computes_in_bfloat16_and_learns():
    exp = experiment(LORA, dtype="bfloat16", quantization=NF4)
    model = build_model(exp.model, exp.method)
    layer = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert layer.weight.device.type == "cuda" and layer.compute_dtype == torch.bfloat16
    optimizer = build_optimizer(model, OptimCfg(lr=1e-2), exp.method)
    ids = batch().cuda()
    first = loss_of(model, ids)
    for _ in range(6):
        loss = loss_of(model, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < first.item() - 0.1


# --- through an engine --------------------------------------------------------------------

@pytest.mark.slow
def test_qlora_with_loraplus_on_mmengine_steps_b_at_the_ratio_lr(tmp_path):
    """One optimizer step from LoRA's init (B = 0, so A gets no gradient): Adam's first
    update is lr × g / (|g| + eps), ±lr with a negligible eps, so every B entry must be
    ±lr × ratio and A unchanged."""
    from conftest import DEMO_CONFIG
    from safetensors.torch import load_file

    from xft.config import load_config
    from xft.engine.builder import build_experiment
    from xft.engine.mmengine_run import run as run_mmengine

    lr, ratio = 1e-3, 4.0
    cfg, exp = load_config(DEMO_CONFIG, {
        "model.quantization": dict(bits=4), "method.loraplus_lr_ratio": ratio,
        "method.target_modules": ["q_proj", "down_proj"], "optim.lr": lr, "optim.eps": 1e-30,
        "train.max_steps": 1, "train.warmup_ratio": 0.0, "train.lr_scheduler": "constant"})
    built = build_experiment(exp, cfg.pretty_text, tmp_path, log=lambda *_: None)
    initial_a = {n: p.detach().clone() for n, p in built.model.named_parameters() if "lora_A" in n}
    hf_dir = run_mmengine(built)
    saved = load_file(str(hf_dir / "adapter_model.safetensors"))
    b_values = torch.cat([t.flatten() for k, t in saved.items() if "lora_B" in k])
    torch.testing.assert_close(b_values.abs(), torch.full_like(b_values, lr * ratio), rtol=1e-3,
                               atol=0)
    for name, value in initial_a.items():
        torch.testing.assert_close(dict(built.model.named_parameters())[name], value)


@pytest.mark.slow
def test_bitsandbytes_import_is_quiet_through_xft():
    """Plain `import bitsandbytes` warns about an optional hub kernel on CPUs with
    AVX512-BF16; xft's import (done before peft's) must not."""
    import subprocess

    codes = ["import bitsandbytes",
             "from xft.model.quant import import_bitsandbytes; import_bitsandbytes()"]
    runs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
            for code in codes]  # concurrently: each mostly waits on imports
    plain, through_xft = (run.communicate()[1] for run in runs)
    assert all(run.returncode == 0 for run in runs), (plain, through_xft)
    if "kernels-community" not in plain:
        pytest.skip("this CPU's bitsandbytes backend logs nothing at import")
    assert "kernels-community" not in through_xft
