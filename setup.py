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
    package_data={"xft": ["assets/**/*"], "xft.configs": ["**/*.py", "deepspeed/*.json"]},
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
        # trl and torchrl: independent references for the RL loss math (tests only).
        "test": ["pytest", "bitsandbytes>=0.50", "deepspeed==0.19.8", "galore-torch==1.0",
                 "trl==1.16.0", "torchrl==0.14.1"],
    },
    entry_points={"console_scripts": ["xft=xft.cli:main"]},
)
