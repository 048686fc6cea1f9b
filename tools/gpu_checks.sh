#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the GPU-marked tests (plan vs measured
# memory printed), then the 1B LoRA training benchmark of docs/benchmarks.md (xft vs the
# textbook recipe: tok/s, MFU, peak memory).
#   bash tools/gpu_checks.sh OUT_DIR TOKENIZER_DIR ALPACA_JSON
# OUT_DIR gets gpu_tests.log and bench_lora.log.
set -uo pipefail
out=${1:?OUT_DIR} tokenizer=${2:?TOKENIZER_DIR} data=${3:?ALPACA_JSON}
export PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__, torch.cuda.get_device_name())"
timeout "${GPU_TESTS_TIMEOUT:-330}" python3 -m pytest -m gpu -q -rA -s -p no:cacheprovider --continue-on-collection-errors tests \
  2>&1 | grep -v -i "warning" | tee "$out/gpu_tests.log" | grep -E "plan vs measured|PASSED|FAILED|ERROR|SKIPPED|passed|failed|Error" | tail -60
timeout "${BENCH_TIMEOUT:-220}" python3 tools/bench_train.py --data "$data" --tokenizer "$tokenizer" \
  --hidden 2048 --intermediate 8192 --layers 16 --heads 32 --kv-heads 8 --tie-embeddings \
  --records 999 --batch-size 8 --max-length 4096 --pack-batch 1 --device cuda --precision bf16 \
  --method lora 2>&1 | tee "$out/bench_lora.log" | tail -30
