"""Test helpers: a small model that answers in readable words (chat, serving), and a server
on a free loopback port in a thread of the test process."""

import re
import socket
import threading
import time

import torch
from conftest import REPO

TINY = REPO / "xft" / "assets" / "tiny-llama"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_word_model(out, template_name, max_positions=1024):
    """A random 2-layer Llama on xft's tiny tokenizer whose generation_config suppresses every
    token that is not a plain word (answers are readable text), exported with `template_name`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from xft.data.templates import get_template
    from xft.engine.export import export_hf

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    # Sizes that are multiples of 64: bitsandbytes' CPU 4-bit inference needs that.
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         vocab_size=len(tokenizer), max_position_embeddings=max_positions,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    words = re.compile(r" ?[A-Za-z]{2,}")
    model.generation_config.suppress_tokens = [
        i for i in range(len(tokenizer)) if not words.fullmatch(tokenizer.decode([i]))]
    export_hf(model, tokenizer, get_template(template_name, tokenizer), out)
    return out


class ThreadServer:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)
