"""`make bench`: Feast's paths and ours on the same generated data, side by side (issue 6)."""
