"""`xft serve`: an OpenAI-compatible HTTP server for a trained model (docs/serve.md).

    app.py         the FastAPI routes, OpenAI-shaped errors, API key, admission
    protocol.py    the request bodies (pydantic)
    generation.py  the one-at-a-time generation queue, streamed token by token
    tool_calls.py  tool calls in an answer, read back in the template's style
"""

from pathlib import Path


def served_name(model, adapter=None):
    """The model id clients send: the adapter's or model's folder name."""
    return Path(str(adapter or model).rstrip("/")).name or str(model)


def run_serve(args):
    import uvicorn
    from transformers.utils import logging as hf_logging

    from xft.serve.app import ServedModel, create_app
    from xft.tools.chat import load_chat_model

    hf_logging.disable_progress_bar()
    model, tokenizer, template = load_chat_model(args.model, args.adapter, args.template,
                                                 args.bits)
    name = args.served_model_name or served_name(args.model, args.adapter)
    served = ServedModel(name, model, tokenizer, template)
    app = create_app(served, api_key=args.api_key, max_concurrency=args.max_concurrency)
    print(f"xft: serving '{name}' (template {template.name}) on http://{args.host}:{args.port}/v1",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
