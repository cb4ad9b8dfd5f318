"""Cross-validation: K stratified folds (R times) as ordinary runs, the test split held out of
every fold, a summary with intervals, and paired comparison of two CVs made with the same seed."""

from cnnlab.workflows.cv.folds import CvResult, FoldHooks, cross_validate, paired_comparison, read_cv

__all__ = ["CvResult", "FoldHooks", "cross_validate", "paired_comparison", "read_cv"]
