"""Human-facing streams: Discord channels for stage runs."""
