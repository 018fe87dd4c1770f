"""Training of the built-in model (never imported by serving)."""
