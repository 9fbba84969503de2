"""labeling: joins late labels with the served predictions, and asks people when unsure."""
