"""Campaign orchestration: manual rules first, a contextual bandit for everyone else."""

__version__ = "0.1.0"
