"""Mergeable aggregate kernels and the state tables they work on."""
