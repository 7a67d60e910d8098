"""Coding-agent backends behind the Agent port: ``codex`` (``codex exec --json``), ``claude``
(``claude -p --output-format stream-json``) and ``command`` (any executable). See docs/agents.md."""
