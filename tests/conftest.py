"""Shared fixtures: tiny random models of several architectures, saved and loaded back from disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rankguide_graph.backend import LoadedModel, load_causal_lm
from rankguide_graph.tiny_models import ARCHITECTURES, build_tokenizer, save_tiny_model

# init_std 0.2 makes the random models emit delimiter tokens every few dozen tokens.
SRM_KWARGS = dict(hidden_size=64, num_layers=4, num_heads=4)
LRM_KWARGS = dict(hidden_size=96, num_layers=6, num_heads=4)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, tokenizer) -> dict[str, dict[str, Path]]:
    """``{arch: {"srm": dir, "lrm": dir}}`` for every supported architecture."""
    dirs: dict[str, dict[str, Path]] = {}
    for arch in ARCHITECTURES:
        root = tmp_path_factory.mktemp(arch)
        dirs[arch] = {
            "srm": save_tiny_model(
                root / "srm", arch, tokenizer=tokenizer, seed=0, init_std=0.2, **SRM_KWARGS
            ),
            "lrm": save_tiny_model(
                root / "lrm", arch, tokenizer=tokenizer, seed=1, init_std=0.2, **LRM_KWARGS
            ),
        }
    return dirs


@pytest.fixture(scope="session")
def loaded_pairs(model_dirs) -> dict[str, dict[str, LoadedModel]]:
    return {
        arch: {role: load_causal_lm(path) for role, path in pair.items()}
        for arch, pair in model_dirs.items()
    }


@pytest.fixture(scope="session")
def llama_pair(loaded_pairs) -> dict[str, LoadedModel]:
    return loaded_pairs["llama"]


@pytest.fixture(autouse=True, scope="session")
def _quiet_transformers():
    from transformers.utils import logging

    logging.disable_progress_bar()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module: tiny models decode several times faster on one thread
    than on two busy cores (use with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def llama_router(model_dirs, tmp_path_factory) -> str:
    """An untrained R2R router file for the llama pair's SRM (threshold 0.5)."""
    from rankguide_graph.r2r import R2RRouter, RouterConfig, save_router, srm_vocab_size

    srm = load_causal_lm(model_dirs["llama"]["srm"])
    torch.manual_seed(0)
    config = RouterConfig(hidden_size=srm.hidden_size, vocab_size=srm_vocab_size(srm), width=16)
    path = tmp_path_factory.mktemp("router") / "router.safetensors"
    save_router(R2RRouter(config), path, {"srm": str(model_dirs["llama"]["srm"]), "threshold": 0.5})
    return str(path)
