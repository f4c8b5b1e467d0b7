"""Policy: the YAML schema, loading with precise errors, key management, the example policy."""
