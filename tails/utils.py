"""The notebook-facing helpers of the original ``tails.utils``, gathered from their modules.

``from tails.utils import load_config, plot_stack, preprocess_stack, make_triplet``
"""

from .alerts import make_triplet
from .config import load_config
from .plot import plot_stack
from .preprocess import preprocess_stack

__all__ = ["load_config", "make_triplet", "plot_stack", "preprocess_stack"]
