"""The improver: reads recorded failures, asks a model for a revised prompt, files a proposal."""
