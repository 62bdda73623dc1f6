"""Stand-in for Hugging Face accelerate: only `python -m accelerate.commands.launch`."""
