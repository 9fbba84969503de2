"""labeling: arrives with the next issue (see README)."""
