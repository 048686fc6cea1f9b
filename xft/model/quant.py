"""bitsandbytes quantization of the base model (QLoRA), an optional dependency.

bitsandbytes is installed with `pip install xft[qlora]`. On CPUs with AVX512-BF16
it tries, at import, to fetch an optional bf16 kernel from the Hugging Face hub
(`kernels-community`) and logs a warning when it cannot; it then uses its own
CPU implementation, so the warning is noise and xft silences that one logger
while importing. peft imports bitsandbytes whenever it is installed, so xft
imports it through `import_bitsandbytes()` before peft.
"""

import logging

from xft.errors import ConfigError

# The logger of bitsandbytes' CPU backend, whose only import-time message is the one above.
BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
# 8-bit layers log "inputs will be cast from <dtype> to float16" on every forward of every
# layer (LLM.int8 quantizes activations from fp16); once per message is enough.
BNB_INT8_LOGGER = "bitsandbytes.autograd._functions"


class OncePerMessage(logging.Filter):
    def __init__(self):
        super().__init__()
        self.seen = set()

    def filter(self, record):
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def import_bitsandbytes(required=False):
    """Import bitsandbytes quietly; None if absent (ConfigError if `required`)."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError:
        if required:
            raise ConfigError("'model.quantization' needs bitsandbytes: "
                              "pip install 'xft[qlora]' (or bitsandbytes>=0.50)") from None
        return None
    finally:
        logger.setLevel(level)
    return bitsandbytes


def compute_dtype(quant_cfg, model_dtype):
    """The dtype quantized layers compute in: explicit, else the model's dtype."""
    import torch

    name = quant_cfg.compute_dtype or model_dtype
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


def bitsandbytes_config(quant_cfg, model_dtype):
    """transformers' BitsAndBytesConfig for a `model.quantization` section."""
    import_bitsandbytes(required=True)
    from transformers import BitsAndBytesConfig

    if quant_cfg.bits == 8:
        int8_logger = logging.getLogger(BNB_INT8_LOGGER)
        if not any(isinstance(f, OncePerMessage) for f in int8_logger.filters):
            int8_logger.addFilter(OncePerMessage())
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=quant_cfg.quant_type,
        bnb_4bit_use_double_quant=quant_cfg.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(quant_cfg, model_dtype))
