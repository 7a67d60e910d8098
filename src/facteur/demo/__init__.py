"""``facteur demo``: the whole loop on one machine, from an idea to reviewed branches."""
