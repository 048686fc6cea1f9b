"""Loading, finding and validating experiment configs."""

from xft.config.loader import (configs_root, copy_config, find_config, list_configs,
                               load_config)
from xft.config.schema import Experiment, validate

__all__ = ["Experiment", "configs_root", "copy_config", "find_config", "list_configs",
           "load_config", "validate"]
