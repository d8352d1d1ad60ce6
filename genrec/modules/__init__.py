"""Lightning modules: loss, optimisation, evaluation and logging around the plain nets."""
from genrec.modules.generative_module import GenerativeModule
from genrec.modules.retrieval_module import RetrievalModule

__all__ = ["GenerativeModule", "RetrievalModule"]
