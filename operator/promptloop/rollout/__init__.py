"""Pure decision logic: phases and their transitions, the statistical test, weight plans.

Nothing in this package does I/O or reads a clock; callers pass the time in.
"""
