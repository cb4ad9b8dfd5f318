"""One module per group of `cnnlab` commands: each has ``register(sub)`` and one handler per command."""
