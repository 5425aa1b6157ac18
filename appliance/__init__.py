"""kuma-appliance: a Kuma 2.14-compatible control plane for VMs."""

__version__ = "0.1.0"
# The Kuma release whose API and resource model we follow.
KUMA_COMPAT_VERSION = "2.14.3"
PRODUCT = "Kuma"
