"""Provider families: how a request reaches each kind of upstream and how its answers read.

Translators here are pure functions (dict → dict, event → events) without I/O.
"""
