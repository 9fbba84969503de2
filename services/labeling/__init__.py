"""labeling: joins late labels with their features and prediction, and asks people when unsure."""
