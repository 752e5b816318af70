"""kmshc: learn, search and certify minimal sufficient attention-head circuits."""
__version__ = "0.1.0"
