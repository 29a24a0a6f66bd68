"""`shoal build`: Dockerfile parsing and execution into the image store."""
