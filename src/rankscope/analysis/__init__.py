"""Spectral and subspace analysis of fine-tuning weight updates."""
