"""A suite end to end, and a suite's speed claims timed."""
