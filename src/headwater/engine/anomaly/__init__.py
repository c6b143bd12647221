"""Anomaly scores per key over a stream: z-scores, EWMA, seasonal baselines."""
