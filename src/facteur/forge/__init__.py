"""The Forge port (issues, comments, reactions, pull requests, review threads, checks, branches) and its
adapters: GitHub (REST + GraphQL) and, for the embedded default, a local forge."""
