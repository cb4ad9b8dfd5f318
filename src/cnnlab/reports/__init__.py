"""HTML pages and their figures: a run's report and comparison, sweep and study pages."""
