"""kuma-cp configuration: defaults, the YAML file, then KUMA_* environment overrides."""
from appliance.config.loader import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config"]
