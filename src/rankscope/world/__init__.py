"""The embedded toy world: a procedural corpus and a tiny Llama pretrained on it."""
