"""What a command does from start to end: the resolution step, training and evaluating a run,
cross-validation, sweeps, studies and putting a model to work (deploy). Folders of runs live here."""
