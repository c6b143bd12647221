"""Operators: one contract (process a batch, advance time, snapshot/restore, status)."""
