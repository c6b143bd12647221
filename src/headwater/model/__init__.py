"""Core vocabulary: schemas, time, ids. No I/O here."""
