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
    model = build_model(experiment)
    if device != "cpu" and experiment.model.quantization is None:
        model.to(device)  # 4-bit models are loaded straight onto the GPU by build_model
    model.train()  # as the engines do (from_pretrained returns it in eval mode)
    return model


def training_steps(model, experiment, device="cpu"):
    """A function running two real optimizer steps (grad_accum micro-batches each,
    clipping, AdamW) as the engines run them, on the planned batch."""
    from xft.model.loss import training_loss
    from xft.model.optimizer import build_optimizer

    loss_fn = training_loss(experiment.train)
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


@pytest.mark.gpu
@pytest.mark.parametrize("length", [1024, 2048])
@pytest.mark.parametrize("method", sorted(GPU_METHODS))
def test_estimate_matches_cuda_max_memory_allocated(method, length, tmp_path_factory):
    """Plan (target cuda) vs torch.cuda.max_memory_allocated of two real steps, within 10%,
    on a 0.3B Llama in bf16 autocast."""
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
    model = built_model(exp, "cuda")
    steps = training_steps(model, exp, "cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    steps()
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated()
    assert abs(estimate.peak - measured) <= 0.10 * measured, (
        f"{method} {length}: estimate {estimate.peak / 2**30:.3f} GiB, "
        f"measured {measured / 2**30:.3f} GiB")
