"""The configuration file: YAML, loaded and validated once into frozen objects.

Every error names the field it is about (`networks[1].vni: ...`) so a bad
config is refused before overlayd touches the system. The schema is in
config/model.py, reading and the wording of errors in config/loader.py; see
README.md ("Configuration") for every key.
"""

from overlayd.config.fields import ConfigError
from overlayd.config.loader import VtepFinder, explain_errors, load_config, parse_config
from overlayd.config.model import (
    DEFAULT_ROUTE_PROTOCOL,
    DEFAULT_STATUS_SOCKET,
    ENCAP_OVERHEAD,
    IPIP_OVERHEAD,
    Config,
    NeighborConfig,
    NetworkConfig,
)

__all__ = [
    "DEFAULT_ROUTE_PROTOCOL", "DEFAULT_STATUS_SOCKET", "ENCAP_OVERHEAD", "IPIP_OVERHEAD", "Config", "ConfigError",
    "NeighborConfig", "NetworkConfig", "VtepFinder", "explain_errors", "load_config", "parse_config",
]
