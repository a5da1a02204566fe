"""imagegen: one image per call through an ordered provider chain, inside the caller's deadline."""
