"""What a run prints: xft's own lines by default, the libraries' too with --verbose.

Known-harmless library messages are dropped where they arise, each by a filter
around the call that raises it (never a process-wide `warnings.simplefilter`), so
an unexpected warning from the same library still shows.
"""

import contextlib
import logging
import os
import warnings

VERBOSE_ENV = "XFT_VERBOSE"  # set by `--verbose`; torchrun workers inherit it


def set_verbose(on):
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def is_verbose():
    return os.environ.get(VERBOSE_ENV) == "1"


class _DropMessages(logging.Filter):
    def __init__(self, fragments):
        super().__init__()
        self.fragments = fragments

    def filter(self, record):
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


@contextlib.contextmanager
def dropping_logs(logger, *fragments):
    """Drop the records of `logger` (a logging.Logger or its name) whose message contains
    one of `fragments` while the block runs; all kept if verbose."""
    if is_verbose():
        yield
        return
    logger = logging.getLogger(logger) if isinstance(logger, str) else logger
    dropper = _DropMessages(tuple(fragments))
    logger.addFilter(dropper)
    try:
        yield
    finally:
        logger.removeFilter(dropper)


@contextlib.contextmanager
def ignoring_warnings(category, message):
    """Ignore the Python warnings of `category` whose text matches the regex `message` while
    the block runs (warnings.catch_warnings); all kept if verbose."""
    with warnings.catch_warnings():
        if not is_verbose():
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def peft_reads_deprecated_checkpointing_flag():
    # peft reads transformers 5's deprecated `is_gradient_checkpointing` when it wraps a
    # model; the FutureWarning is theirs to fix.
    return ignoring_warnings(FutureWarning, ".*is_gradient_checkpointing")


def deepspeed_announcing_cpu():
    # Importing DeepSpeed (MMEngine's runner and transformers' Trainer do) logs, on a
    # machine without a GPU, that it will use the CPU.
    return dropping_logs("DeepSpeed", "Setting accelerator to CPU")


@contextlib.contextmanager
def library_progress_bars_off():
    """transformers' own progress bars (loading weights, writing shards) off while the block
    runs, unless verbose: a run shows one progress bar, xft's."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on and not is_verbose():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
