"""Shared code of the stand-in trainer scripts (Kohya keeps its shared code in library/ too)."""
