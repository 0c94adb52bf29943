"""Video: propagate granularity masks through a clip with SAM-2's memory."""
