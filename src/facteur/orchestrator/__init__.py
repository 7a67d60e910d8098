"""The orchestrator: what happens to runs after they are recorded."""
