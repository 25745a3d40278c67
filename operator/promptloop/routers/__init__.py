"""Traffic backends: write per-version weights, read them back."""
