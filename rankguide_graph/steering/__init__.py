"""Rank-guided steering (paper §4.2): the steering vector, its calibration and its injection.

- :mod:`.vector`: :class:`SteeringVector` (a direction bound to one layer, checked against a model).
- :mod:`.hook`: :func:`add_at_positions`, Eq. 8 at step delimiters.
- :mod:`.calibration`: Eq. 6-7 and SEAL's vector from step states (pure: no model).
- :mod:`.traces`: recording the SRM's calibration traces (imported on demand: it needs the
  backend, which itself uses this package).
- :mod:`.io`: safetensors files with string metadata, atomic writes, never pickle.
"""

from rankguide_graph.steering.calibration import (
    Calibration,
    CalibrationSample,
    RankFilter,
    TraceStep,
    calibrate,
)
from rankguide_graph.steering.hook import add_at_positions
from rankguide_graph.steering.io import (
    load_steering_vector,
    read_metadata,
    save_calibration,
    save_steering_vector,
)
from rankguide_graph.steering.vector import SteeringVector

__all__ = [
    "Calibration",
    "CalibrationSample",
    "RankFilter",
    "SteeringVector",
    "TraceStep",
    "add_at_positions",
    "calibrate",
    "load_steering_vector",
    "read_metadata",
    "save_calibration",
    "save_steering_vector",
]
