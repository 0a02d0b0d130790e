"""The schedule contract and the arithmetic on it: schedules, cost tables, sampler calls, fronts."""
