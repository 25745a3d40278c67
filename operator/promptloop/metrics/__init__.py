"""Failure-count providers: cumulative per-version request and failure counters."""
