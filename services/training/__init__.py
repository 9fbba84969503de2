"""training: online learning with River, and signed model versions published to the registry."""
