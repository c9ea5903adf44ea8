"""Data cards, case sources, loaders and synthetic phantoms."""
