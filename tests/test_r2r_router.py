"""The R2R router: its network, its file, its label shards, its training, ``r2r-train``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rankguide_graph.backend import LoadedModel, load_causal_lm
from rankguide_graph.cli import main
from rankguide_graph.errors import ConfigError, ModelLoadError
from rankguide_graph.r2r import (
    LoadedRouter,
    R2RRouter,
    RouterConfig,
    load_router,
    read_label_dir,
    save_router,
    srm_vocab_size,
    write_label_meta,
    write_label_shard,
)
from rankguide_graph.r2r.labels_io import SHARD_DTYPES
from rankguide_graph.r2r.train import (
    TrainConfig,
    choose_threshold,
    routing_metrics,
    split_rows,
    train_router,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOP_K = 8
FAST = TrainConfig(width=32, depth=1, epochs=12, lr=3e-3, batch_size=256, patience=3, val_share=0.2)


@pytest.fixture(scope="module")
def srm_dir(model_dirs) -> Path:
    return model_dirs["llama"]["srm"]


@pytest.fixture(scope="module")
def srm(srm_dir) -> LoadedModel:
    return load_causal_lm(srm_dir, device="cpu", dtype="float32")


def synthetic(d: int, vocab: int, problems: int = 40, per: int = 50, seed: int = 0) -> dict:
    """Tokens whose label is a learnable function of the features: divergent iff hidden[0] > 0.8."""
    gen = torch.Generator().manual_seed(seed)
    n = problems * per
    hidden = torch.randn(n, d, generator=gen)  # (N, d)
    topk = torch.sort(torch.randn(n, TOP_K, generator=gen) * 3, descending=True).values  # (N, k)
    return {
        "hidden": hidden,
        "topk_logits": topk,
        "token_ids": torch.randint(0, vocab, (n,), generator=gen),
        "labels": (hidden[:, 0] > 0.8).to(torch.uint8),
        "problem_index": torch.arange(problems).repeat_interleave(per),
    }


def write_labels(
    root: Path, srm: LoadedModel, name: str, hidden_size: int | None = None, **kwargs
) -> Path:
    d = hidden_size or srm.hidden_size
    tensors = synthetic(d, srm_vocab_size(srm), **kwargs)
    half = tensors["labels"].shape[0] // 2
    write_label_shard(root, 0, {k: v[:half] for k, v in tensors.items()})
    write_label_shard(root, 1, {k: v[half:] for k, v in tensors.items()})
    write_label_meta(
        root,
        {
            "srm": name,
            "lrm": "lrm",
            "hidden_size": d,
            "vocab_size": srm_vocab_size(srm),
            "top_k": TOP_K,
            "verifier": "synthetic",
            "shards": ["shard-00000.safetensors", "shard-00001.safetensors"],
            "counts": {"tokens": len(tensors["labels"]), "divergent": int(tensors["labels"].sum())},
        },
    )
    return root


def bound_router(srm: LoadedModel, **config) -> R2RRouter:
    router = R2RRouter(
        RouterConfig(srm.hidden_size, srm_vocab_size(srm), top_k=TOP_K, width=16, depth=2, **config)
    )
    router.bind_embedding(srm.model.get_input_embeddings())
    return router.eval()


def test_forward_gives_one_logit_per_token_and_needs_an_embedding(srm):
    d, vocab = srm.hidden_size, srm_vocab_size(srm)
    router = R2RRouter(RouterConfig(d, vocab, top_k=TOP_K, width=16, depth=2))
    hidden, topk, ids = torch.randn(5, d), torch.randn(5, TOP_K), torch.randint(0, vocab, (5,))
    with pytest.raises(ConfigError, match="bind_embedding"):
        router(hidden, topk, ids)
    router.bind_embedding(srm.model.get_input_embeddings())
    assert router(hidden, topk, ids).shape == (5,)
    assert not any("embedding" in key for key in router.state_dict())  # never saved
    with pytest.raises(ConfigError, match="another SRM"):
        router.bind_embedding(torch.zeros(vocab, d + 1))


def test_save_load_round_trip_gives_identical_outputs(srm, srm_dir, tmp_path):
    router = bound_router(srm)
    path, sidecar = save_router(
        router, tmp_path / "r.safetensors", {"srm": str(srm_dir), "threshold": 0.3}
    )
    loaded = load_router(path, srm)
    assert loaded.threshold == 0.3 and json.loads(sidecar.read_text())["width"] == 16
    hidden, logits = torch.randn(4, srm.hidden_size), torch.randn(4, srm_vocab_size(srm))
    ids = torch.tensor([1, 2, 3, 4])
    topk = torch.topk(logits, TOP_K).values
    with torch.no_grad():
        expected = torch.sigmoid(router(hidden, topk, ids))
    assert torch.equal(loaded.probs(hidden, logits, ids), expected)
    assert loaded.prob(hidden[2], logits[2], 3) == pytest.approx(float(expected[2]), abs=1e-6)
    # Loaded without an SRM, it refuses to score until bound.
    unbound = load_router(path)
    with pytest.raises(ConfigError, match="bind_embedding"):
        unbound.prob(hidden[0], logits[0], 1)
    unbound.bind(srm)
    assert unbound.prob(hidden[0], logits[0], 1) == loaded.prob(hidden[0], logits[0], 1)


def test_a_router_for_another_srm_is_refused(srm, srm_dir, tmp_path):
    d, vocab = srm.hidden_size, srm_vocab_size(srm)
    for name, config in {
        "hidden": RouterConfig(d + 8, vocab, top_k=TOP_K, width=8, depth=0),
        "vocab": RouterConfig(d, vocab + 1, top_k=TOP_K, width=8, depth=0),
    }.items():
        path = tmp_path / f"{name}.safetensors"
        save_router(R2RRouter(config), path, {"srm": "other-srm", "threshold": 0.5})
        with pytest.raises(ConfigError, match="other-srm") as err:
            load_router(path, srm)
        assert str(srm_dir) in str(err.value) and str(path) in str(err.value)
    path = tmp_path / "name.safetensors"
    save_router(bound_router(srm), path, {"srm": "other-srm", "threshold": 0.5})
    with pytest.raises(ConfigError, match="allow_other_name"):
        load_router(path, srm)
    assert load_router(path, srm, allow_other_name=True).threshold == 0.5


def test_a_damaged_or_missing_router_file_is_refused_with_its_path(srm, srm_dir, tmp_path):
    path = tmp_path / "r.safetensors"
    save_router(bound_router(srm), path, {"srm": str(srm_dir), "threshold": 0.5})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="damaged") as err:
        load_router(path, srm)
    assert str(path) in str(err.value)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_router(tmp_path / "none.safetensors")
    path.write_bytes(data)
    sidecar = Path(str(path) + ".json")
    sidecar.write_text("{not json")
    with pytest.raises(ModelLoadError, match="not readable JSON") as err:
        load_router(path, srm)
    assert str(sidecar) in str(err.value)
    sidecar.unlink()
    with pytest.raises(ModelLoadError, match="no metadata"):
        load_router(path, srm)


def test_threshold_zero_always_routes_one_never_and_otherwise_strictly_above(srm):
    router = bound_router(srm)
    assert LoadedRouter(router, 0.0).routes(0.0)
    assert not LoadedRouter(router, 1.0).routes(1.0)
    half = LoadedRouter(router, 0.5)
    assert not half.routes(0.5) and half.routes(0.5001) and not half.routes(0.2)
    with pytest.raises(ConfigError, match="threshold"):
        LoadedRouter(router, 1.5)


def test_choose_threshold_for_a_recall_or_an_lrm_share():
    probs = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 0, 1, 0, 0])
    t = choose_threshold(probs, labels, target_recall=0.75)
    assert 0.49 < t < 0.5  # the third-highest positive (0.5) must still route
    assert routing_metrics(probs, labels, t)["recall"] == 0.75
    t = choose_threshold(probs, labels, target_recall=1.0)
    assert t < float(probs[7]) and routing_metrics(probs, labels, t)["recall"] == 1.0
    t = choose_threshold(probs, labels, target_lrm_share=0.35)
    assert t == pytest.approx(0.6) and routing_metrics(probs, labels, t)["routed_share"] == 0.3
    assert choose_threshold(probs, labels, target_lrm_share=1.0) == 0.0
    with pytest.raises(ConfigError, match="no divergent"):
        choose_threshold(probs, torch.zeros(10), target_recall=0.9)


def test_label_shards_round_trip_and_bad_shards_are_named(srm, tmp_path):
    root = write_labels(tmp_path / "labels", srm, "s", problems=4, per=5)
    labels = read_label_dir(root)
    assert len(labels) == 20 and labels.hidden.dtype == torch.float16
    assert labels.top_k == TOP_K and labels.problem_index.tolist()[-1] == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no labels.json"):
        read_label_dir(tmp_path / "empty")
    shard = root / "shard-00001.safetensors"
    tensors = synthetic(srm.hidden_size, 10, problems=1, per=3)
    save_file({k: v.contiguous() for k, v in tensors.items()}, shard)  # float32, int64 labels
    with pytest.raises(ConfigError, match="expected torch.float16") as err:
        read_label_dir(root)
    assert str(shard) in str(err.value)
    typed = {k: v.to(SHARD_DTYPES[k]) for k, v in tensors.items()}
    save_file({**typed, "labels": torch.zeros(2, dtype=torch.uint8)}, shard)
    with pytest.raises(ConfigError, match="labels has shape"):
        read_label_dir(root)
    with pytest.raises(ConfigError, match="labels has shape"):
        write_label_shard(root, 2, {**tensors, "labels": torch.zeros(2)})
    shard.unlink()
    with pytest.raises(ConfigError, match="missing") as err:
        read_label_dir(root)
    assert str(shard) in str(err.value)
    meta = json.loads((root / "labels.json").read_text())
    (root / "labels.json").write_text(json.dumps({**meta, "format": "other/9"}))
    with pytest.raises(ConfigError, match="format"):
        read_label_dir(root)


def test_training_learns_the_label_and_meets_the_target_recall_on_validation(srm, tmp_path):
    labels = read_label_dir(write_labels(tmp_path / "labels", srm, "s"))
    result = train_router(labels, srm.model.get_input_embeddings(), FAST, progress=False)
    m = result.metrics
    assert m["recall"] >= 0.95 and m["precision"] > 0.6 and m["routed_share"] < 0.5
    assert m["counts"]["val_problems"] == 8 and m["split"] == "validation"
    # Recompute on the validation rows alone: the threshold meets the target there.
    _, val_rows = split_rows(labels, FAST.val_share, FAST.seed)
    val = labels.subset(val_rows)
    with torch.no_grad():
        probs = torch.sigmoid(result.router.eval()(val.hidden, val.topk_logits, val.token_ids))
    assert routing_metrics(probs, val.labels, result.threshold)["recall"] >= 0.95
    share = train_router(
        labels,
        srm.model.get_input_embeddings(),
        TrainConfig(**{**FAST.__dict__, "target_lrm_share": 0.1, "epochs": 2}),
        progress=False,
    )
    assert share.metrics["routed_share"] <= 0.1


def test_cli_trains_and_writes_a_router_the_srm_loads(srm, srm_dir, tmp_path, capsys):
    root = write_labels(tmp_path / "labels", srm, str(srm_dir))
    out = tmp_path / "router.safetensors"
    args = ["--width", "32", "--depth", "1", "--epochs", "8", "--lr", "3e-3"]
    args += ["--batch-size", "256", "--val-share", "0.2", "--no-progress"]
    assert (
        main(["r2r-train", "--labels", str(root), "--out", str(out), "--srm", str(srm_dir), *args])
        == 0
    )
    assert "recall" in capsys.readouterr().out
    loaded = load_router(out, srm)
    meta = loaded.meta
    assert meta["metrics"]["recall"] >= 0.95 and meta["recipe"]["lr"] == 3e-3
    assert meta["top_k"] == TOP_K and meta["lrm"] == "lrm" and "--lr 0.003" in meta["command"]
    hidden, logits = torch.randn(srm.hidden_size), torch.randn(srm_vocab_size(srm))
    assert 0.0 <= loaded.prob(hidden, logits, 5) <= 1.0


def test_cli_bad_inputs_exit_2_with_the_reason(srm, srm_dir, tmp_path, capsys):
    def fails(labels: Path, out: Path, *extra: str) -> str:
        argv = ["r2r-train", "--labels", str(labels), "--out", str(out), "--srm", str(srm_dir)]
        assert main([*argv, "--epochs", "1", "--no-progress", *extra]) == 2
        return capsys.readouterr().err

    out = tmp_path / "router.safetensors"
    (tmp_path / "empty").mkdir()
    assert "no labels.json" in fails(tmp_path / "empty", out)
    good = write_labels(tmp_path / "good", srm, str(srm_dir), problems=4, per=5)
    assert "does not exist" in fails(good, tmp_path / "nodir" / "r.safetensors")
    meta = json.loads((good / "labels.json").read_text())
    (good / "labels.json").write_text(json.dumps({**meta, "vocab_size": 999}))
    assert "vocab 999" in fails(good, out)
    narrow = write_labels(tmp_path / "narrow", srm, str(srm_dir), hidden_size=32, problems=2, per=3)
    assert "hidden size 32" in fails(narrow, out)
    (good / "labels.json").write_text(json.dumps({**meta, "srm": "someone-else"}))
    assert "allow-other-name" in fails(good, out)
    none = tmp_path / "none"
    write_labels(none, srm, str(srm_dir), problems=4, per=5)
    tensors = synthetic(srm.hidden_size, srm_vocab_size(srm), problems=4, per=5)
    for i in range(2):
        write_label_shard(none, i, {**tensors, "labels": torch.zeros(20, dtype=torch.uint8)})
    assert "no divergent token" in fails(none, out)
    assert not out.exists() and not Path(str(out) + ".json").exists()


def test_srm_names_match_by_value_or_directory(srm_dir):
    from rankguide_graph.demo.pair import demo_dir
    from rankguide_graph.r2r.router import same_srm

    assert same_srm("demo", str(demo_dir() / "srm")) and same_srm(str(srm_dir), f"{srm_dir}/")
    assert not same_srm("demo", str(srm_dir)) and not same_srm("org/a", "org/b")


def test_cli_can_target_an_lrm_share(srm, srm_dir, tmp_path, capsys):
    root = write_labels(tmp_path / "labels", srm, str(srm_dir), problems=10, per=20)
    out = tmp_path / "router.safetensors"
    argv = ["r2r-train", "--labels", str(root), "--out", str(out), "--srm", str(srm_dir)]
    assert main([*argv, "--epochs", "1", "--width", "16", "--target-lrm-share", "0.1"]) == 0
    meta = json.loads(Path(str(out) + ".json").read_text())
    assert meta["metrics"]["routed_share"] <= 0.1 and meta["recipe"]["target_recall"] is None
    assert meta["srm"] == str(Path(srm_dir).resolve())
