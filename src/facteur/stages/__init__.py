"""Stage runners: what `facteur stage <stage>` runs inside a workflow."""
