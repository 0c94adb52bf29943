"""Nuclio function for CVAT: `main` (handler) and the ``function*.yaml`` deployment files."""
