"""Rank-guided steering (paper §4.2): the steering vector and its injection at step delimiters."""

from rankguide_graph.steering.hook import add_at_positions
from rankguide_graph.steering.io import load_steering_vector, read_metadata, save_steering_vector
from rankguide_graph.steering.vector import SteeringVector

__all__ = [
    "SteeringVector",
    "add_at_positions",
    "load_steering_vector",
    "read_metadata",
    "save_steering_vector",
]
