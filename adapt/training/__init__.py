"""What a training run needs besides its task: callbacks, strategies (FSDP), the run summary."""
