"""Tiny random backbones, saved as Hugging Face folders, for tests and smoke runs."""
