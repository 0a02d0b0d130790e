"""Suites: YAML experiments loaded, checked and planned."""
