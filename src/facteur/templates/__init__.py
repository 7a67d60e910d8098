"""Deployment templates: the Argo WorkflowTemplates of the stages (``facteur templates render``).

Kept free of imports, so that the init container's ``python3 -m facteur.templates.event_file`` loads only
that module and ``facteur/__init__`` (which reads the installed version).
"""
