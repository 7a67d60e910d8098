"""Intake: external inputs turned into domain commands."""
