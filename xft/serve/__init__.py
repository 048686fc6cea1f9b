"""`xft serve`: an OpenAI-compatible HTTP server for a trained model (docs/serve.md).

    app.py         the FastAPI routes, OpenAI-shaped errors, API key, admission
    protocol.py    the request bodies (pydantic)
    generation.py  the one-at-a-time generation queue, streamed token by token
    tool_calls.py  tool calls in an answer, read back in the template's style
    scoring.py     a reward model served for scoring
"""

from pathlib import Path


def served_name(model, adapter=None):
    """The model id clients send: the adapter's or model's folder name."""
    return Path(str(adapter or model).rstrip("/")).name or str(model)


def load_served(model_dir, adapter=None, template=None, bits=None, name=None):
    """The model to serve: a reward model (scored) or a generative one (answers)."""
    from xft.errors import ConfigError
    from xft.inference.reward import is_reward_model_dir, load_reward_model
    from xft.paths import resolve_path

    name = name or served_name(model_dir, adapter)
    if is_reward_model_dir(resolve_path(model_dir)):
        if adapter or bits:
            raise ConfigError(f"{model_dir} is a reward model, served whole: --adapter and "
                              "--bits are for generative models")
        from xft.serve.scoring import ServedRewardModel

        return ServedRewardModel(name, load_reward_model(model_dir, template))
    from xft.serve.app import ServedModel
    from xft.tools.chat import load_chat_model

    return ServedModel(name, *load_chat_model(model_dir, adapter, template, bits))


def run_serve(args):
    import uvicorn
    from transformers.utils import logging as hf_logging

    from xft.serve.app import create_app

    hf_logging.disable_progress_bar()
    served = load_served(args.model, args.adapter, args.template, args.bits,
                         args.served_model_name)
    app = create_app(served, api_key=args.api_key, max_concurrency=args.max_concurrency)
    what = "scoring with reward model" if served.kind == "reward" else "serving"
    print(f"xft: {what} '{served.name}' (template {served.template.name}) on "
          f"http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
