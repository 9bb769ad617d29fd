"""Placing work on clusters other engines schedule: Slurm (`slurm`); Kubernetes is on paper only."""
