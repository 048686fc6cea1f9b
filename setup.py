import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "xft/__init__.py").read_text()).group(1)

setup(
    name="xft",
    version=VERSION,
    description="Fine-tuning toolkit for large language models: one config, two engines.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The top-level configs/ folder is installed as xft/configs so that
    # `xft list-cfg` works from a wheel as well as from a checkout.
    packages=find_packages(include=["xft", "xft.*"]) + ["xft.configs"],
    package_dir={"xft.configs": "configs"},
    package_data={"xft": ["assets/**/*", "estimate/architectures/*.json"], "xft.configs": ["**/*.py", "deepspeed/*.json"]},
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0",
        "peft>=0.17",
        "mmengine>=0.10.7",
        "datasets>=3.0",
        "accelerate>=1.0",
        "sentencepiece",
        "protobuf",
        "numpy",
        "tensorboard",  # training scalars (work_dir/tensorboard), both engines
        "matplotlib",  # work_dir/loss_curve.png; xft check-dataset's length histogram
    ],
    extras_require={
        "qlora": ["bitsandbytes>=0.50"],
        # xft drives DeepSpeed itself on MMEngine (not mmengine's DeepSpeedStrategy,
        # which needs deepspeed<0.19.7); tested with 0.19.8.
        "deepspeed": ["deepspeed>=0.19.8"],
        "galore": ["galore-torch==1.0"],  # optim.type='GaLore...'
        # `xft serve`: the OpenAI-compatible HTTP API.
        "serve": ["fastapi>=0.115", "uvicorn>=0.30"],
        # `xft webui` (its chat uses the serve code).
        "webui": ["gradio>=5.0,<7", "fastapi>=0.115", "uvicorn>=0.30"],
        # train.report_to: W&B, MLflow (the skinny client: no server).
        "trackers": ["wandb>=0.31,<0.32", "mlflow-skinny>=3.17,<4"],
        # train.report_to='swanlab'. Apart: swanlab 0.10 requires protobuf<7, and with
        # protobuf 6 sentencepiece 0.2's model proto fails to load (slow tokenizers,
        # `xft vocab`), so it is in neither `trackers` nor `test`.
        "swanlab": ["swanlab>=0.10.3,<0.11"],
        # mistral-common: Mistral's reference tokenization and the v1 tokenizer file it ships
        # (1.8.5: later releases require numpy<2.4). The serve tests use the official openai
        # client; the web UI test drives Debian's chromium through selenium (it skips without
        # /usr/bin/chromium). trl and torchrl: independent references for the preference and
        # RL losses in tests; xft never imports them. pytest-xdist: the suite runs on two
        # processes (README's test command).
        "test": ["pytest", "pytest-xdist==3.8.0", "bitsandbytes>=0.50", "deepspeed==0.19.8",
                 "galore-torch==1.0", "mistral-common==1.8.5", "fastapi>=0.115",
                 "uvicorn>=0.30", "gradio>=5.0,<7", "openai>=1.40", "httpx>=0.27",
                 "selenium>=4.20", "trl==1.16.0", "torchrl==0.14.1", "wandb>=0.31,<0.32",
                 "mlflow-skinny>=3.17,<4"],
    },
    entry_points={"console_scripts": ["xft=xft.cli:main"]},
)
