"""Lightning tasks: what is predicted from a batch, which loss, which metrics."""
