"""What a training run needs besides its task, one concern a module: the run folder (``run_dir``),
the checkpoint to resume from (``checkpoints``), the embedding cache (``cache_policy``), the
Lightning Trainer (``trainer``: callbacks, strategies such as FSDP, checkpoint IO), the checks
of trainer keys against the data (``constraints``), what a finished run leaves (``record``) and
its printed summary (``summary``). ``adapt.train`` assembles them."""
