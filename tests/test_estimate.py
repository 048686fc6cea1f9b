"""`xft plan`'s memory estimate against measured peaks of real training steps.

The estimate runs the step on fake tensors (xft.estimate.memory); the reference
runs the same step for real on a tiny model built with xft's own build_model,
and reads its peak from the CPU allocator's events as torch.profiler records
them: every allocation and free, in order, independent of the estimate's tracker.
"""

import pytest
import torch

from xft.config.schema import (DataCfg, DatasetCfg, Experiment, MethodCfg, ModelCfg, OptimCfg,
                               QuantizationCfg, TrainCfg)
from xft.estimate.memory import measure_step


def tiny_model_dir(root, tie=False, vocab=2048):
    from transformers import LlamaConfig, LlamaForCausalLM

    path = root / f"llama-tie{tie}-v{vocab}"
    if not path.exists():
        config = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=344,
                             num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                             tie_word_embeddings=tie, max_position_embeddings=1024)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def experiment(model_dir, method="lora", length=256, rows=2, pack=True, checkpointing=False,
               bits=None, grad_accum=1, labels_only=True, dtype="float32"):
    return Experiment(
        model=ModelCfg(path=model_dir, dtype=dtype, gradient_checkpointing=checkpointing,
                       quantization=QuantizationCfg(bits=4) if bits else None),
        datasets=[DatasetCfg(path="unused.json")], template="chatml",
        method=MethodCfg(type=method, r=8, alpha=16, dropout=0.05),
        data=DataCfg(max_length=length, pack=pack), optim=OptimCfg(max_grad_norm=1.0),
        train=TrainCfg(batch_size=rows, grad_accum=grad_accum, loss_at_labels_only=labels_only,
                       loss_chunk_size=128))


def real_batch(experiment, vocab):
    """The batch the estimate plans (every position real and labelled), through xft's
    own collators: packed rows of two samples, or unpadded rows with a mask."""
    from xft.data.collate import PackedCollator, PadCollator

    rows, length = experiment.train.batch_size, experiment.data.max_length
    ids = torch.arange(rows * length).remainder(vocab).view(rows, length).tolist()
    if experiment.data.pack:
        half = length // 2
        samples = [{"input_ids": r, "labels": r,
                    "position_ids": list(range(half)) + list(range(length - half))} for r in ids]
        return PackedCollator(0)(samples)
    return PadCollator(0)([{"input_ids": r, "labels": r} for r in ids])


def allocator_peak(run, baseline_bytes):
    """Peak bytes held by the CPU allocator while `run()` runs, plus what was held before."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = []

    def walk(nodes):
        for node in nodes:
            if node.tag == _EventType.Allocation:
                events.append((node.start_time_ns, node.extra_fields.alloc_size))
            walk(node.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return baseline_bytes + peak


def built_model(experiment, device="cpu"):
    """The experiment's model through xft's build path, in training mode, on `device`."""
    from xft.model.build import build_model

    torch.manual_seed(0)
    model = build_model(experiment.model, experiment.method)
    if device != "cpu" and experiment.model.quantization is None:
        model.to(device)  # 4-bit models are loaded straight onto the GPU by build_model
    model.train()  # as the engines do (from_pretrained returns it in eval mode)
    return model


def training_steps(model, experiment, device="cpu"):
    """A function running two real optimizer steps (grad_accum micro-batches each,
    clipping, AdamW) as the engines run them, on the planned batch."""
    from xft.model.loss import CausalLMLoss
    from xft.model.optimizer import build_optimizer

    loss_fn = CausalLMLoss(experiment.train.loss_at_labels_only,
                           experiment.train.loss_chunk_size)
    optimizer = build_optimizer(model, experiment.optim, experiment.method)
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = {k: v.to(device) for k, v in real_batch(experiment, vocab).items()}
    params = [p for p in model.parameters() if p.requires_grad]
    precision = experiment.train.mixed_precision

    def steps():
        for _ in range(2):
            for _ in range(experiment.train.grad_accum):
                with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss_sum, count = loss_fn(model, batch)
                (loss_sum / count).backward()
                del loss_sum, count
            torch.nn.utils.clip_grad_norm_(params, experiment.optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return steps


def measured_step_peak(experiment):
    """The CPU allocator's peak over two real optimizer steps of the experiment's model."""
    model = built_model(experiment)
    held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in list(model.parameters()) + list(model.buffers())}
    for p in model.parameters():  # 4-bit weights: their scales are tensors too
        state = getattr(p, "quant_state", None)
        if state is not None:
            for t in (state.absmax, state.code, getattr(state.state2, "absmax", None)):
                if isinstance(t, torch.Tensor):
                    held[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return allocator_peak(training_steps(model, experiment), sum(held.values()))


CASES = {
    "lora packed": dict(method="lora"),
    "lora padded": dict(method="lora", pack=False),
    "lora checkpointing": dict(method="lora", checkpointing=True),
    "lora accumulation": dict(method="lora", grad_accum=2, rows=1, length=512),
    "full": dict(method="full"),
    "full checkpointing long": dict(method="full", checkpointing=True, length=512),
    "full logits": dict(method="full", labels_only=False),
    "freeze": dict(method="freeze"),
    "qlora checkpointing": dict(method="lora", bits=4, checkpointing=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_estimate_matches_measured_peak(case, tmp_path_factory):
    options = dict(CASES[case])
    root = tmp_path_factory.getbasetemp()
    exp = experiment(tiny_model_dir(root, tie=case.startswith("freeze")), **options)
    estimate = measure_step(exp, target="cpu")
    measured = measured_step_peak(exp)
    assert abs(estimate.peak - measured) <= 0.15 * measured, (
        f"{case}: estimate {estimate.peak / 2**20:.2f} MiB, measured {measured / 2**20:.2f} MiB")


GPU_METHODS = {"full": dict(method="full"), "lora": dict(method="lora", dtype="bfloat16"),
               "qlora": dict(method="lora", dtype="bfloat16", bits=4, checkpointing=True)}


# Two real steps of a GPU case, in a fresh process: its peak is what a training run's
# process sees (another test's leftovers or cuBLAS workspaces are not in it).
MEASURE_ON_GPU = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from test_estimate import GPU_METHODS, built_model, experiment, training_steps
exp = experiment(sys.argv[2], length=int(sys.argv[4]), rows=1, **GPU_METHODS[sys.argv[3]])
exp.train.mixed_precision = "bf16"
steps = training_steps(built_model(exp, "cuda"), exp, "cuda")
steps()
torch.cuda.synchronize()
print(torch.cuda.max_memory_allocated())
"""


@pytest.mark.gpu
@pytest.mark.parametrize("length", [1024, 2048])
@pytest.mark.parametrize("method", sorted(GPU_METHODS))
def test_estimate_matches_cuda_max_memory_allocated(method, length, tmp_path_factory):
    """Plan (target cuda) vs torch.cuda.max_memory_allocated of two real steps in a fresh
    process, within 10%, on a 0.3B Llama in bf16 autocast."""
    import subprocess
    import sys
    from pathlib import Path

    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.getbasetemp() / "llama-300m"
    if not path.exists():
        config = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816,
                             num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=4,
                             max_position_embeddings=4096)
        LlamaForCausalLM(config).save_pretrained(path)
    exp = experiment(str(path), length=length, rows=1, **GPU_METHODS[method])
    exp.train.mixed_precision = "bf16"
    estimate = measure_step(exp, target="cuda")
    result = subprocess.run([sys.executable, "-c", MEASURE_ON_GPU, str(Path(__file__).parent),
                             str(path), method, str(length)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = int(result.stdout.split()[-1])
    # Printed for docs/benchmarks.md (pytest -s): the figure, not only the verdict.
    print(f"\nplan vs measured, {method} {length}: plan {estimate.peak / 2**30:.3f} GiB, "
          f"measured {measured / 2**30:.3f} GiB, ratio {estimate.peak / measured:.3f}")
    assert abs(estimate.peak - measured) <= 0.10 * measured, (
        f"{method} {length}: estimate {estimate.peak / 2**30:.3f} GiB, "
        f"measured {measured / 2**30:.3f} GiB")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_flops_per_token_match_torch_flop_counter(method, tmp_path_factory):
    """The speed model's FLOPs per token against torch's FlopCounterMode over a real
    forward and backward of the same model (matmuls and attention)."""
    from torch.utils import flop_counter
    from torch.utils.flop_counter import FlopCounterMode

    from xft.estimate.architectures import load_architecture
    from xft.estimate.speed import flops_per_token
    from xft.model.build import count_parameters
    from xft.model.loss import CausalLMLoss

    exp = experiment(tiny_model_dir(tmp_path_factory.getbasetemp()), method=method, rows=1,
                     length=512)
    model = built_model(exp)
    trainable, total = count_parameters(model)
    batch = real_batch(exp, model.get_output_embeddings().weight.shape[0])
    aten = torch.ops.aten
    # torch's own formulas for ops its counter does not map: the loss's in-place addmm_
    # and the CPU's flash attention (CUDA's kernels are mapped).
    counter = FlopCounterMode(display=False, custom_mapping={  # shapes in, FLOPs out
        aten.addmm_: lambda c, a, b, **_: 2 * a[0] * a[1] * b[1],
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *_, **__: flop_counter.sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda g, q, k, v, *_, **__: flop_counter.sdpa_backward_flop_count(g, q, k, v)})
    with counter:
        loss_sum, count = CausalLMLoss(exp.train.loss_at_labels_only,
                                       exp.train.loss_chunk_size)(model, batch)
        (loss_sum / count).backward()
    measured = counter.get_total_flops() / int(count)
    config, _ = load_architecture(exp.model)
    planned, _, _ = flops_per_token(exp, config, trainable / total)
    assert abs(planned - measured) <= 0.10 * measured, (planned, measured)


@pytest.mark.slow
def test_plan_counts_the_real_model_and_its_verdict_follows_the_card(tmp_path_factory, capsys):
    """Parameters as xft's build_model counts them; the verdict flips with the card size;
    a card too small gets alternatives, each planned again."""
    from xft.estimate.gpus import parse_memory
    from xft.estimate.report import plan_lines, plan_run
    from xft.model.build import count_parameters

    exp = experiment(tiny_model_dir(tmp_path_factory.getbasetemp()), rows=2, length=128)
    trainable, total = count_parameters(built_model(exp))
    big = plan_run(exp, parse_memory("8GB"), count_data=False)
    assert (big.step.parameters, big.step.trainable) == (total, trainable)
    assert big.fits and not big.alternatives
    needed = big.device.total / 2**30
    small = plan_run(exp, parse_memory(f"{needed * 0.9:.4f}GiB"), count_data=False)
    assert not small.fits
    changes = {a.change.split(" (")[0]: a for a in small.alternatives}
    # Gradient checkpointing and one row per micro-batch each lower the measured peak.
    for change in ("gradient checkpointing", "micro-batch 1, more accumulation"):
        assert changes[change].total < small.device.total, change
    text = "\n".join(plan_lines(small))
    assert "does NOT fit" in text and "try gradient checkpointing" in text


@pytest.mark.slow
def test_train_warns_on_a_gpu_too_small_and_not_on_one_large_enough(tmp_path_factory,
                                                                     monkeypatch):
    from xft.estimate import gpus
    from xft.estimate.report import warn_if_too_big

    exp = experiment(tiny_model_dir(tmp_path_factory.getbasetemp()), rows=1, length=64)
    warnings = []
    monkeypatch.setattr(gpus, "local_gpu", lambda: gpus.Gpu("test card", 80.0, None))
    warn_if_too_big(exp, warn=warnings.append)
    assert warnings == []
    monkeypatch.setattr(gpus, "local_gpu", lambda: gpus.Gpu("test card", 0.01, None))
    warn_if_too_big(exp, warn=warnings.append)
    assert len(warnings) == 1 and "run out of memory" in warnings[0]
    assert "--no-plan" in warnings[0]


@pytest.mark.slow
def test_bad_gpu_options_fail_with_one_line(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("plan", "tiny_llama_lora_self_cognition", "--gpu", "H900", check=False)
    assert result.returncode == 1 and "xft: error: --gpu 'H900': unknown" in result.stderr
    result = run_cli("plan", "tiny_llama_lora_self_cognition", "--gpu-memory", "lots",
                     check=False)
    assert "--gpu-memory 'lots'" in result.stderr


@pytest.mark.slow
def test_shipped_qwen2_7b_qlora_config_plans_offline():
    """The shipped 7B QLoRA config plans from xft's copy of Qwen2-7B-Instruct's config.json;
    the frozen base has the model card's 7,615,616,512 parameters, its 152k-token embeddings
    and head are fp32 (prepare_model_for_kbit_training upcasts them)."""
    import re

    from tests.conftest import run_cli

    out = run_cli("plan", "qwen2_7b_instruct_qlora_alpaca_e3", "--gpu", "H100-SXM").stdout
    assert "architecture: xft's copy of https://huggingface.co/Qwen/Qwen2-7B-Instruct/" in out
    total, trainable = map(float, re.search(
        r"parameters: ([\d.]+)M trainable ([\d.]+)M", out.replace(",", "")).groups())
    assert abs(total - trainable - 7615.6) < 0.1
    embeddings_and_head = 2 * 152064 * 3584 * 4 / 2**30
    assert f"float32 {embeddings_and_head:.2f} GiB" in out
    assert "verdict: fits on H100-SXM" in out and "tokens/s at 30% MFU" in out


@pytest.mark.slow
def test_plan_of_the_shipped_demo_counts_its_data():
    """Local data and tokenizer: the epoch is counted from the datasets as training builds
    them: the 45 records of the shipped self-cognition file."""
    import re

    from tests.conftest import run_cli

    out = run_cli("plan", "tiny_llama_lora_self_cognition", "--gpu", "RTX-4090").stdout
    found = re.search(r"epoch: ([\d,]+) tokens \(([\d,]+) rows", out)
    tokens, rows = (int(x.replace(",", "")) for x in found.groups())
    assert rows == 45 and tokens > 45 * 10
    assert "verdict: fits on RTX-4090" in out
