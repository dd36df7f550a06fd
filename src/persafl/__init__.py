"""PersA-FL: personalized asynchronous federated learning, a reproduction pipeline."""

__version__ = "0.1.0"
