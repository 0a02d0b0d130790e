"""flexiffusion-repro: reproduce and benchmark training-free diffusion acceleration.

The Python API: :class:`Schedule` (a per-step schedule of F / P<b> / N tokens, its
generators and predicted speedup), :func:`apply_schedule` (a user's diffusers pipeline run
under a schedule), :func:`denoise` (a sampling loop under a schedule), :func:`branches` (the
cache branches of a UNet or transformer) and :func:`cost_table` (what each step kind costs).
"""

__version__ = "0.1.0"
__all__ = ["CostTable", "Schedule", "apply_schedule", "branches", "cost_table", "denoise"]

_LAZY = {
    "apply_schedule": "engine",
    "denoise": "engine",
    "branches": "engine",
    "cost_table": "speed.costs",
    "Schedule": "core.schedule",
    "CostTable": "core.schedule",
}


def __getattr__(name: str):
    # Lazy: `repro --help` and schedule parsing must not pay for importing torch/diffusers.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'repro' has no attribute {name!r}")
