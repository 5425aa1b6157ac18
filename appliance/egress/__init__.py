"""Zone egress run by kuma-cp itself (`kuma-cp run --egress-enabled`)."""
