"""The model: what the pipeline builds and what it learned, as data."""
