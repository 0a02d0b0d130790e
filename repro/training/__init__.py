"""Training and model cards of the embedded digits zoo."""
