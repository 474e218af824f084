"""kdbench harness: configuration, training, evaluation, statistics and reports."""
