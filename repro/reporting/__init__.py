"""A run shown and judged: tables, plots, the HTML report, MLflow, the regression gate."""
