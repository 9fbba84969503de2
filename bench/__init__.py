"""Eddy's benchmarks: figures printed and written to ``bench/results.json``, never asserted."""
