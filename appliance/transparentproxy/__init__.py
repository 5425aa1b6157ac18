"""The transparent proxy on a VM: the iptables rules that send an application's traffic through its
Envoy, as `kumactl install transparent-proxy` of Kuma 2.14 writes them.

`config` holds the options (Kuma's TransparentProxyConfig: defaults, flags, the YAML file), `rules` is
a pure function from the options and a few facts about the host to iptables-restore text, and `host`
is the I/O edge: it finds iptables, probes what it supports, applies and removes the rules.
A leaf: it imports nothing of ours but `gocompat`.
"""
