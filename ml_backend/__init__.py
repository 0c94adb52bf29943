"""Serving adapters and the command line: Label Studio, CVAT, `unsamv2`."""
