"""Fine-tune a transformer text classifier from one validated config, locally or on a cloud GPU."""

__version__ = "0.1.0"
