"""Networks: IPAM, bridges, veths and namespaces, nftables NAT and load balancing."""
