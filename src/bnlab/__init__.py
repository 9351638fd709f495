"""bnlab: the quantitative theory of batch normalisation on gradient descent, runnable and checkable.

Implements Cai, Li & Shen, "A Quantitative Analysis of the Effect of Batch Normalization on Gradient Descent"
(ICML 2019).
"""

from bnlab.errors import BnlabError

__version__ = "0.1.0"
__all__ = ["BnlabError", "__version__"]
