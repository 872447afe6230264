"""izf_lib: the library behind the izf-book reproduction of Invertible Zero-Shot Recognition Flows.

Modules: ``flows`` (invertible layers), ``density`` (supplementary eq. 9).
"""

__version__ = "0.1.0"
