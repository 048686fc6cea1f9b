"""GPUs xft plans for: memory and peak dense bf16 tensor throughput.

Peak TFLOP/s are the vendors' dense (no sparsity) bf16 figures with fp32
accumulation, from their datasheets and architecture whitepapers:
  H100 SXM / PCIe, H200   NVIDIA H100 and H200 Tensor Core GPU datasheets
  A100                    NVIDIA A100 Tensor Core GPU datasheet
  L40S, L4, A10           NVIDIA L40S, L4 and A10 datasheets
  RTX 4090                NVIDIA Ada Lovelace architecture whitepaper (GeForce RTX 4090)
  RTX 3090                NVIDIA Ampere GA102 GPU architecture whitepaper
  RTX A6000               NVIDIA RTX A6000 datasheet
  MI300X                  AMD Instinct MI300X datasheet
(the datasheets print the sparse figure, twice these). Memory is what the
driver reports as the card's total (nvidia-smi), in GiB.
"""

import re
from dataclasses import dataclass

from xft.errors import ConfigError

GIB = 1024 ** 3


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    bf16_tflops: float  # dense peak; None when unknown (a card given by memory only)


GPUS = {g.name.lower(): g for g in [
    Gpu("H100-SXM", 79.6, 989.4),
    Gpu("H100-PCIe", 79.6, 756.0),
    Gpu("H200", 140.4, 989.4),
    Gpu("A100-80GB", 80.0, 312.0),
    Gpu("A100-40GB", 40.0, 312.0),
    Gpu("L40S", 45.0, 362.1),
    Gpu("L4", 22.5, 121.0),
    Gpu("A10", 22.5, 125.0),
    Gpu("RTX-4090", 24.0, 165.2),
    Gpu("RTX-3090", 24.0, 71.0),
    Gpu("RTX-A6000", 48.0, 154.8),
    Gpu("MI300X", 192.0, 1307.4),
]}
ALIASES = {"h100": "h100-sxm", "a100": "a100-80gb", "4090": "rtx-4090", "3090": "rtx-3090",
           "a6000": "rtx-a6000"}


def find_gpu(name):
    key = name.lower().replace(" ", "-").replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in GPUS:
        raise ConfigError(f"--gpu {name!r}: unknown; known: {', '.join(g.name for g in GPUS.values())}"
                          " (or give --gpu-memory, e.g. 8GB)")
    return GPUS[key]


def parse_memory(text):
    """'8GB', '8GiB', '8', '80 GB' → a Gpu of that many GiB (card sizes are binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(GB|GiB|G)?\s*", text, re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"--gpu-memory {text!r}: expected a size such as 8GB or 24GiB")
    return Gpu(f"{match.group(1)} GiB card", float(match.group(1)), None)


def local_gpu():
    """The CUDA device of this process, if any."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    known = next((g for g in GPUS.values() if g.name.lower().replace("-", " ") in
                  props.name.lower().replace("-", " ")), None)
    return Gpu(props.name, props.total_memory / GIB, known.bf16_tflops if known else None)
