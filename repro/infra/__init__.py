"""Plumbing every layer uses: atomic writes, guarded reads, timing, progress, processes."""
