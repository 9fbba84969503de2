"""monitoring: arrives with the next issue (see README)."""
