"""Applications: one module each (which data, model, metric and decoder)."""
