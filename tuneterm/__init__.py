"""tuneterm: a terminal experiment manager for fine-tuning pre-trained transformers."""

__version__ = "0.1.0"
