"""lorad: a folder of photos in, a trained LoRA out."""

__version__ = "0.1.0"
