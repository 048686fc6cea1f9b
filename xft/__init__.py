"""xft: fine-tuning toolkit for large language models.

Importing the package has no side effects: no patches, no environment changes.
Heavy dependencies (torch, transformers, peft, mmengine) are imported by the
modules that need them, so `import xft` and `xft --version` stay fast.
"""

__version__ = "0.1.0"
