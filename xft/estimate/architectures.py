"""The model's architecture (its config.json) without downloading anything.

Where it comes from, in order:
  1. model.path is a local directory (or xft://...) with a config.json;
  2. the Hugging Face cache already holds the hub id's config.json;
  3. xft ships the config.json hyper-parameters of the models its configs name
     (xft/estimate/architectures/<org>--<name>.json, each citing its source).
"""

import json
from pathlib import Path

from xft.errors import ConfigError
from xft.paths import resolve_path

SHIPPED_DIR = Path(__file__).resolve().parent / "architectures"


def shipped_file(hub_id):
    return SHIPPED_DIR / (hub_id.replace("/", "--") + ".json")


def load_architecture(model_cfg):
    """(transformers PretrainedConfig, where it came from) for a ModelCfg."""
    from transformers import AutoConfig

    path = resolve_path(model_cfg.path)
    local = Path(path) / "config.json"
    if local.is_file():
        return _from_pretrained(path, model_cfg), str(local)
    try:  # a config.json already in the local Hugging Face cache; never downloads
        config = AutoConfig.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code,
                                            local_files_only=True)
        return config, f"{path} (Hugging Face cache)"
    except (OSError, ValueError):
        pass
    shipped = shipped_file(path)
    if shipped.is_file():
        raw = json.loads(shipped.read_text(encoding="utf-8"))
        source = raw.pop("_source")
        return AutoConfig.for_model(**raw), f"xft's copy of {source}"
    raise ConfigError(f"'model.path' {path!r}: no config.json there, in the Hugging Face cache "
                      f"or shipped with xft ({len(list(SHIPPED_DIR.glob('*.json')))} models); "
                      "point model.path at a local model directory")


def _from_pretrained(path, model_cfg):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the model config in '{path}': {e}") from None
