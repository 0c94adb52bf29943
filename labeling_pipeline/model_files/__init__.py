"""Model files: base checkpoints (download, import, verify) and published model versions."""
