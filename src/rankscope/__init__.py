"""rankscope: LoRA rank vs full fine-tuning trade-offs, measured end to end."""

__version__ = "0.1.0"
