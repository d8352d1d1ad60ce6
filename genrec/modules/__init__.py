"""Lightning modules: loss, optimisation, evaluation and logging around the plain nets."""
from genrec.modules.retrieval import RetrievalModule

__all__ = ["RetrievalModule"]
