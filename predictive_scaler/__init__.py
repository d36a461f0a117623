"""predictive-scaler: keeps GPU LLM inference pods warm before traffic arrives."""

__version__ = "0.1.0"
