"""Data pipeline: raw records → conversations → rendered text → token ids and labels."""
