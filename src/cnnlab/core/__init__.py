"""The pure core: errors, registries (pure data), the config schema, option checks, safe YAML and
atomic file IO. It imports nothing else of cnnlab, and no PyTorch."""
