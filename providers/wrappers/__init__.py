"""Temporary: the four translating families' single modules (`providers/anthropic.py`, ...) seen
through the `ProviderFamily` contract, until each becomes its own package with a
`providers/<family>/family.py`. Each file here is replaced by that and deleted with it."""
