"""Workers and offline jobs: data store, pseudo-labels, training, evaluation, export."""
