"""The kernel's transports: thin adapters from the wire to the call table."""
