"""imagegen: one image per call through an ordered provider chain, inside a time budget."""
