"""R2R: token-level routing with a trained router (labels, router, inference)."""

from __future__ import annotations
