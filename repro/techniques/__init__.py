"""Baseline acceleration techniques at a knob or a speed budget."""
