"""Evaluation runs: a checkpoint (or a training-free baseline) scored on a split, with the
popularity baseline, bootstrap intervals, breakdowns, comparisons and the written reports. The
ranking metrics themselves are one layer down, in ``genrec.metrics``, so modules can use them."""
