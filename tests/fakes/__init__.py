"""Fake upstreams for the tests: real wire formats, requests validated against the SDK types."""
