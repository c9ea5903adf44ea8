"""SAM2 loading, presets, preprocessing and freezing."""
