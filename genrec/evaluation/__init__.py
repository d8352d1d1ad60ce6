"""Evaluation runs: a checkpoint or baseline scored on a split into a report, and comparisons of reports."""
