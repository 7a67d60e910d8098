"""Executors: where a stage run executes (local subprocess, Argo Workflows, or nowhere)."""
