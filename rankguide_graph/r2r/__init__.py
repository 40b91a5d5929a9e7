"""R2R (Roads to Rome): token-level routing between the SRM and the LRM with a trained router.

At every token the SRM proposes, a small neural router reads the SRM's last-layer hidden state,
its top-k logit values and the embedding of the proposed token, and predicts whether that token is
"divergent" (would change the outcome); routed tokens are written by the LRM instead.

- :mod:`.labelling`: labels by path-following (``rankguide r2r-label``): where the SRM's greedy
  token differs from the LRM's, the LRM continues from both and a verifier decides.
- :mod:`.labels_io`: the label shards (``labels.json`` + ``shard-NNNNN.safetensors``) that
  ``rankguide r2r-label`` writes and ``rankguide r2r-train`` reads.
- :mod:`.router`: the router network, its file (safetensors + JSON sidecar, never pickle) and
  :class:`LoadedRouter`, which scores tokens and applies the threshold.
- :mod:`.train`: training with a class-weighted loss and early stopping, and the choice of the
  threshold on the validation split (``rankguide r2r-train``).
"""

from __future__ import annotations

from rankguide_graph.r2r.labels_io import (
    LABELS_FORMAT,
    LabelSet,
    read_label_dir,
    write_label_meta,
    write_label_shard,
)
from rankguide_graph.r2r.router import (
    ROUTER_FORMAT,
    LoadedRouter,
    R2RRouter,
    RouterConfig,
    load_router,
    save_router,
    srm_vocab_size,
)

__all__ = [
    "LABELS_FORMAT",
    "ROUTER_FORMAT",
    "LabelSet",
    "LoadedRouter",
    "R2RRouter",
    "RouterConfig",
    "load_router",
    "read_label_dir",
    "save_router",
    "srm_vocab_size",
    "write_label_meta",
    "write_label_shard",
]
