"""`xft convert split SRC OUT --max-shard-size SIZE`: re-shard a model directory.

The tensors are read from SRC's safetensors (one file or shards with an index)
and written by huggingface_hub's `save_torch_state_dict`, which shards them and
writes the index that transformers reads; the model is never instantiated, so
any architecture works and dtypes are kept. Every other file of SRC (config,
tokenizer, generation config, xft's files) is copied unchanged.
"""

import shutil
from pathlib import Path

from xft.errors import XftError
from xft.paths import resolve_path
from xft.engine.checkpoints import MODEL_INDEX, read_model_weights


def split_model(src, out_dir, max_shard_size, log=print):
    from huggingface_hub import save_torch_state_dict

    from xft.engine.export import fresh_tmp_dir, replace_dir

    src, out_dir = Path(resolve_path(src)), Path(out_dir)
    if not src.is_dir():
        raise XftError(f"{src} is not a model directory")
    if src.resolve() == out_dir.resolve():
        raise XftError("OUT must differ from SRC")
    weight_files = {p.name for p in src.glob("*.safetensors")} | {MODEL_INDEX}
    if not any((src / name).is_file() for name in weight_files):
        raise XftError(f"{src} holds no safetensors weights (a PEFT adapter is one small file "
                       "and needs no split)")
    state = read_model_weights(src)
    tmp = fresh_tmp_dir(out_dir)
    try:
        save_torch_state_dict(state, str(tmp), max_shard_size=max_shard_size,
                              metadata={"format": "pt"})
    except ValueError as e:  # e.g. a size it cannot parse
        shutil.rmtree(tmp)
        raise XftError(f"--max-shard-size {max_shard_size!r}: {e}") from None
    for path in src.iterdir():
        if path.name not in weight_files:
            copy = shutil.copytree if path.is_dir() else shutil.copy2
            copy(path, tmp / path.name)
    out = replace_dir(tmp, out_dir)
    shards = len(list(out.glob("*.safetensors")))
    log(f"xft: wrote {len(state)} tensors in {shards} shard{'s' * (shards != 1)} to {out}")
    return out
