"""A run's results as data: per-seed quality, comparisons at equal speed, verdicts, bench
reports."""
