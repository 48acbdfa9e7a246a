"""Real servers (dnsmasq, moto STS over TLS) that tests run on loopback."""
