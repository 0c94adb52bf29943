"""Torch modules: SAM-2 extended with UnSAMv2's granularity modules."""
