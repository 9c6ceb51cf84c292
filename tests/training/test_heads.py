"""The MLP and kNN heads beside the linear one: what each can learn, how its settings are
chosen on the training split, and that each saves, loads, predicts and exports alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import imgcls
from imgcls.config import TrainConfig
from imgcls.deploy.export import export_model
from imgcls.errors import ConfigError
from imgcls.models.heads import KNNHead, fold_temperature
from imgcls.training.heads import fit_head
from imgcls.training.knn_head import K_GRID
from imgcls.training.linear_head import C_LADDER, fit_linear_head

TINY = TrainConfig(backbone="test_efficientnet", pretrained=False, input_size=64, precision="fp32")


def _quadrants(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes no line separates: opposite quadrants of the first two dimensions share a
    class (XOR), in 8 dimensions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 8)).astype(np.float32)
    x[:, 2:] *= 0.3
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    return x, y


def _accuracy(head, x, y) -> float:
    return float((head.logits(x).argmax(1) == y).mean())


def test_the_head_table_is_what_the_command_line_offers_and_every_kind_reloads():
    from imgcls.cli.main import build_parser
    from imgcls.config import HEADS
    from imgcls.models.heads import SAVED_LAYERS, head_for_config
    from imgcls.training.heads import HEAD_FITTERS

    assert list(HEAD_FITTERS) == list(HEADS)
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    assert list(next(a.choices for a in train._actions if a.dest == "head")) == list(HEADS)
    x, y = _quadrants(120)
    for kind in HEADS:  # what each fitter saves names a layer the loader builds, of the same shape
        fitted = fit_head(kind, x, y, num_classes=2, seed=0, balanced=False)
        assert fitted.summary["type"] in SAVED_LAYERS, kind
        bank = (fitted.layer.bank, fitted.layer.bank_labels) if isinstance(fitted.layer, KNNHead) else None
        rebuilt = head_for_config(fitted.summary, in_features=8, num_classes=2, bank=bank)
        if rebuilt is not None:
            rebuilt.load_state_dict(fitted.layer.state_dict())
            rebuilt.eval(), fitted.layer.eval()
            with torch.inference_mode():
                assert torch.equal(rebuilt(torch.from_numpy(x)), fitted.layer(torch.from_numpy(x))), kind


def test_mlp_learns_what_no_linear_head_can():
    x, y = _quadrants()
    test_x, test_y = _quadrants(seed=1)
    mlp = fit_head("mlp", x, y, num_classes=2, seed=0, balanced=False)
    linear = fit_head("linear", x, y, num_classes=2, seed=0, balanced=False)
    assert _accuracy(mlp, test_x, test_y) > 0.85
    assert _accuracy(linear, test_x, test_y) < 0.7
    summary = mlp.summary
    assert summary["type"] == "mlp" and 1 <= summary["steps"] <= 2000
    assert set(summary["holdout_accuracy"]) == {"128/0.0", "128/0.5", "512/0.0", "512/0.5"}


def test_mlp_is_reproducible_for_a_seed():
    x, y = _quadrants(200)
    first = fit_head("mlp", x, y, num_classes=2, seed=3, balanced=False)
    second = fit_head("mlp", x, y, num_classes=2, seed=3, balanced=False)
    np.testing.assert_array_equal(first.logits(x), second.logits(x))


def test_knn_chooses_k_on_train_and_votes_by_neighbours():
    x, y = _quadrants()
    knn = fit_head("knn", x, y, num_classes=2, seed=0, balanced=False)
    assert knn.summary["k"] in K_GRID and knn.summary["bank_size"] == len(x)
    assert set(map(int, knn.summary["cv_accuracy"])) <= set(K_GRID)
    test_x, test_y = _quadrants(seed=1)
    assert _accuracy(knn, test_x, test_y) > 0.85
    probs = np.exp(knn.logits(test_x))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_knn_with_k_1_returns_each_training_image_label():
    x, y = _quadrants(60)
    head = KNNHead(torch.from_numpy(x), torch.from_numpy(y), 2, k=1)
    assert (head(torch.from_numpy(x)).argmax(1).numpy() == y).all()


def test_temperature_folds_into_every_head():
    x, y = _quadrants(120)
    for kind in ("linear", "mlp", "knn"):
        head = fit_head(kind, x, y, num_classes=2, seed=0, balanced=False)
        before = head.logits(x)
        fold_temperature(head.layer, 2.0)
        np.testing.assert_allclose(head.logits(x), before / 2.0, rtol=1e-4, atol=1e-5)


def test_balanced_knn_weighs_a_rare_class_up():
    x, y = _quadrants()
    keep = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:30]])
    x, y = x[keep], y[keep]
    plain = fit_head("knn", x, y, num_classes=2, seed=0, balanced=False)
    balanced = fit_head("knn", x, y, num_classes=2, seed=0, balanced=True)
    test_x, test_y = _quadrants(seed=2)
    rare = test_y == 1
    recall = lambda head: float((head.logits(test_x[rare]).argmax(1) == 1).mean())  # noqa: E731
    assert recall(balanced) > recall(plain)


def test_linear_grid_extends_until_the_choice_is_inside_it_or_says_why():
    rng = np.random.default_rng(0)
    # Well separated classes: accuracy is flat in C and the log loss keeps falling as the
    # regularisation weakens, so the search walks up past the starting grid.
    centres = rng.normal(0, 4, (3, 10))
    y = np.repeat(np.arange(3), 40)
    x = centres[y] + rng.normal(0, 1, (len(y), 10))
    head = fit_linear_head(x, y, num_classes=3, seed=0)
    assert max(head.cv_accuracy) > 1.0  # went past the starting grid
    assert set(head.cv_log_loss) == set(head.cv_accuracy)
    inside = min(head.cv_accuracy) < head.c < max(head.cv_accuracy)
    assert inside or (head.c == C_LADDER[-1] and "largest" in head.grid_note)


def test_a_non_linear_head_cannot_be_fine_tuned():
    with pytest.raises(ConfigError, match="strategy=probe"):
        TrainConfig(head="mlp", strategy="finetune")
    with pytest.raises(ConfigError, match="head"):
        TrainConfig(head="svm")


@pytest.mark.parametrize("head", ["mlp", "knn"])
def test_every_head_saves_loads_predicts_and_exports(head, image_folder, tmp_path):
    run = tmp_path / "run"
    clf = imgcls.train(image_folder, run, config=TINY, head=head)
    assert clf.config["head"]["type"] == head
    assert clf.metrics["val"]["accuracy"] >= 0.0
    loaded = imgcls.load(run, runtime="torch")
    images = sorted(image_folder.rglob("*.png"))[:5]
    for a, b in zip(clf.predict(images), loaded.predict(images), strict=True):
        assert a.label == b.label
        np.testing.assert_allclose(a.probability, b.probability, atol=1e-5)
    report = export_model(run, format="onnx", check_images=images)
    assert report.max_abs_logit_diff <= report.allowed_logit_diff and report.top1_agreement == 1.0


def test_auto_strategy_keeps_a_non_linear_head_on_frozen_features(image_folder, tmp_path):
    clf = imgcls.train(image_folder, config=TINY, head="knn", strategy="auto")
    assert clf.config["strategy"] == "probe" and clf.config["head"]["type"] == "knn"


def test_a_model_with_an_unknown_head_type_is_refused_by_name(image_folder, tmp_path):
    import json

    from imgcls.errors import ModelFormatError

    imgcls.train(image_folder, tmp_path / "run", config=TINY, head="knn")
    config_file = tmp_path / "run" / "model" / "config.json"
    config = json.loads(config_file.read_text())
    config["head"]["type"] = "svm"
    config_file.write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="svm"):
        imgcls.load(tmp_path / "run")
