"""`xft plan` beside the GPU memory measured in docs/benchmarks.md (H100, bench_train.py).

Builds the three measured settings as xft experiments (the same model shapes,
method, precision, packed row length and micro-batch as `tools/bench_train.py`
ran them; the model is only a config.json, no weights) and prints the plan's
peak tensor memory next to the measured `torch.cuda.max_memory_allocated`.

    python tools/plan_benchmarks.py          # all three
    python tools/plan_benchmarks.py "1B LoRA"  # the settings whose label starts so
"""

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xft.config.schema import (DataCfg, DatasetCfg, Experiment, MethodCfg,  # noqa: E402
                               ModelCfg, OptimCfg, QuantizationCfg, TrainCfg)
from xft.estimate.gpus import GIB, find_gpu  # noqa: E402
from xft.estimate.report import device_memory, Parallelism  # noqa: E402
from xft.estimate.memory import measure_step  # noqa: E402

# (label, measured peak GiB, Llama shape, method, model dtype, 4-bit, checkpointing, row length)
ONE_B = dict(vocab_size=151646, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
             num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
             max_position_embeddings=4096)
SEVEN_B = dict(vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False,
               max_position_embeddings=2048)
SETTINGS = [
    ("1B LoRA r16", 13.62, ONE_B, "lora", "bfloat16", False, False, 4096),
    ("1B full", 28.29, ONE_B, "full", "float32", False, False, 4096),
    ("7B QLoRA r16, NF4, checkpointing", 6.88, SEVEN_B, "lora", "bfloat16", True, True, 2048),
]


def experiment(model_dir, method, dtype, four_bit, checkpointing, length):
    return Experiment(
        model=ModelCfg(path=str(model_dir), dtype=dtype, gradient_checkpointing=checkpointing,
                       quantization=QuantizationCfg(bits=4) if four_bit else None),
        datasets=[DatasetCfg(path="alpaca_en_demo.json")], template="chatml",
        method=MethodCfg(type=method, r=16, alpha=32, dropout=0.05),
        data=DataCfg(max_length=length, pack=True), optim=OptimCfg(lr=2e-4, max_grad_norm=1.0),
        train=TrainCfg(batch_size=1, mixed_precision="bf16"))


def main():
    only = sys.argv[1:]  # optional: labels' first words, e.g. 7B
    h100 = find_gpu("H100-SXM")
    print("| setting | measured on H100 (max_memory_allocated) | xft plan: tensors | "
          "plan / measured | plan: total with overhead | verdict on H100 | plan time |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for label, measured, shape, method, dtype, four_bit, ckpt, length in SETTINGS:
            if only and not any(label.startswith(o) for o in only):
                continue
            model_dir = Path(root) / label.split()[0]
            model_dir.mkdir(exist_ok=True)
            (model_dir / "config.json").write_text(json.dumps(
                {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **shape}))
            start = time.perf_counter()
            step = measure_step(experiment(model_dir, method, dtype, four_bit, ckpt, length))
            seconds = time.perf_counter() - start
            device = device_memory(step, Parallelism())
            fits = "fits" if device.total <= h100.memory_gib * GIB else "does not fit"
            print(f"| {label} | {measured:.2f} GiB | {step.peak / GIB:.2f} GiB | "
                  f"{step.peak / GIB / measured:.2f} | {device.total / GIB:.2f} GiB | {fits} | "
                  f"{seconds:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
