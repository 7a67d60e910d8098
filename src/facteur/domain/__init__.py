"""The domain core: records, states and pure rules. Imports no driver."""
