"""flexiffusion-repro: reproduce and benchmark training-free diffusion acceleration."""

__version__ = "0.1.0"
__all__ = ["Schedule", "apply_schedule", "denoise"]


def __getattr__(name: str):
    # Lazy: `repro --help` and schedule parsing must not pay for importing torch/diffusers.
    if name in ("apply_schedule", "denoise"):
        from . import engine

        return getattr(engine, name)
    if name == "Schedule":
        from .schedule import Schedule

        return Schedule
    raise AttributeError(f"module 'repro' has no attribute {name!r}")
