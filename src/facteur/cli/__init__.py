"""The ``facteur`` command line."""
