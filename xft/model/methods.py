"""Apply a training method to a loaded model: which weights train, and how.

full    every weight trains.
lora    peft LoRA adapters (DoRA / rsLoRA options, modules_to_save); on a
        quantized model this is QLoRA. A fresh adapter, or the one at
        method.init_adapter, trained further.
freeze  every weight frozen except the top N decoder layers (and optionally
        the output head and named modules), which train fully.
"""

import torch.nn as nn

from xft.console import peft_reads_deprecated_checkpointing_flag
from xft.errors import ConfigError
from xft.paths import resolve_path

# Non-reentrant checkpointing needs no input that requires grad, so frozen
# embeddings under LoRA/freeze need no hook to keep the graph connected.
CHECKPOINTING_KWARGS = {"use_reentrant": False}


def apply_method(model, method, gradient_checkpointing=False):
    if getattr(model, "is_quantized", False):
        from peft import prepare_model_for_kbit_training

        # Freezes the base, upcasts fp16/bf16 non-quantized weights (norms, embeddings,
        # head) to fp32 for stable training, and enables checkpointing if asked.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    if gradient_checkpointing:
        model.config.use_cache = False
    if method.type == "lora":
        return add_lora(model, method)
    if method.type == "freeze":
        train_top_layers(model, method)
    return model


def add_lora(model, method):
    from peft import LoraConfig, PeftModel, get_peft_model

    if method.init_adapter is not None:
        path = resolve_path(method.init_adapter)
        try:
            return PeftModel.from_pretrained(model, path, is_trainable=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load 'method.init_adapter' from '{path}': {e}") from None

    tied = bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False))
    config = LoraConfig(
        r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
        target_modules=method.target_modules, use_dora=method.use_dora,
        use_rslora=method.use_rslora, modules_to_save=method.modules_to_save or None,
        # With tied embeddings, a trained copy of embed_tokens/lm_head stays tied to the other.
        ensure_weight_tying=tied and bool(method.modules_to_save),
        # SEQ_CLS: peft also trains (and saves) the new score head of a reward model.
        task_type="SEQ_CLS" if is_sequence_classifier(model) else "CAUSAL_LM")
    try:
        with peft_reads_deprecated_checkpointing_flag():
            return get_peft_model(model, config)
    except ValueError as e:  # e.g. target modules not found in the model
        raise ConfigError(f"cannot apply LoRA (method): {e}") from None


def is_sequence_classifier(model):
    return type(model).__name__.endswith("ForSequenceClassification")


def decoder_layers(model):
    """The model's stack of decoder layers: the ModuleList with num_hidden_layers blocks."""
    count = model.config.get_text_config().num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(f"method.type='freeze': no list of {count} decoder layers found in "
                      f"{type(model).__name__}")


def train_top_layers(model, method):
    layers = decoder_layers(model)
    n = method.trainable_layers
    if n > len(layers):
        raise ConfigError(f"'method.trainable_layers' is {n} but the model has "
                          f"{len(layers)} decoder layers")
    model.requires_grad_(False)
    for layer in layers[len(layers) - n:]:
        layer.requires_grad_(True)
    if method.train_head:
        model.get_output_embeddings().requires_grad_(True)
    for name in method.modules_to_save:
        matches = [m for path, m in model.named_modules()
                   if path == name or path.endswith("." + name)]
        if not matches:
            raise ConfigError(f"'method.modules_to_save': no module named '{name}' in the model")
        for module in matches:
            module.requires_grad_(True)
