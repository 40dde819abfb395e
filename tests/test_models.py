"""fetch-models against a loopback HTTP server: verified downloads, skips, corrupt files refused."""

import functools
import http.server
import threading

import pytest

from tails.models import ModelFetchError, fetch_models, verify_model, write_manifest


@pytest.fixture
def bucket(tmp_path):
    """A folder served over http on 127.0.0.1, holding one model with its manifest."""
    root = tmp_path / "bucket"
    model = root / "tails-test"
    model.mkdir(parents=True)
    (model / "tails.weights.h5").write_bytes(b"weights" * 1000)
    (model / "MODEL.md").write_text("# card\n")
    write_manifest(model)
    requests_seen = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            requests_seen.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", model, requests_seen
    server.shutdown()


def test_fetch_verifies_and_then_skips(bucket, tmp_path):
    url, model, seen = bucket
    dest = tmp_path / "models"
    report = fetch_models("tails-test", url=url, path=str(dest))
    assert report == ["tails-test: fetched 2 file(s)"]
    assert (dest / "tails-test" / "tails.weights.h5").read_bytes() == (model / "tails.weights.h5").read_bytes()
    assert verify_model(dest / "tails-test") == []
    n = len(seen)
    assert fetch_models(["tails-test"], url=url, path=str(dest)) == ["tails-test: already present, verified"]
    assert len(seen) == n + 1  # only the manifest was asked for


def test_corrupt_file_is_refused_and_nothing_left(bucket, tmp_path):
    url, model, _ = bucket
    (model / "tails.weights.h5").write_bytes(b"truncated")  # no longer matches the manifest
    dest = tmp_path / "models"
    with pytest.raises(ModelFetchError, match="checksum mismatch"):
        fetch_models("tails-test", url=url, path=str(dest))
    assert not (dest / "tails-test" / "tails.weights.h5").exists()
    assert not [p for p in (dest / "tails-test").iterdir() if p.name.startswith(".")]


def test_unknown_model_is_a_clear_error(bucket, tmp_path):
    url, _, _ = bucket
    with pytest.raises(ModelFetchError, match="no manifest for model 'nope'"):
        fetch_models("nope", url=url, path=str(tmp_path / "models"))


def test_status_is_recorded_and_read(tmp_path):
    from tails.models import model_status

    folder = tmp_path / "tails-x"
    folder.mkdir()
    (folder / "tails.weights.h5").write_bytes(b"w")
    assert model_status(folder / "tails.weights.h5") is None
    write_manifest(folder)
    assert model_status(folder / "tails.weights.h5") == "experimental"
    write_manifest(folder, status="validated")
    assert model_status(folder / "tails.weights.h5") == "validated"
    with pytest.raises(ValueError, match="status must be one of"):
        write_manifest(folder, status="great")


def test_an_experimental_model_is_named_in_a_warning(tmp_path, caplog):
    from tails.models import warn_if_experimental

    folder = tmp_path / "tails-x"
    folder.mkdir()
    (folder / "tails.weights.h5").write_bytes(b"w")
    write_manifest(folder)
    with caplog.at_level("WARNING", logger="tails.models"):
        warn_if_experimental(folder / "tails.weights.h5")
    assert "tails-x is experimental" in caplog.text and "MODEL.md" in caplog.text
    caplog.clear()
    write_manifest(folder, status="validated")
    warn_if_experimental(folder / "tails.weights.h5")
    assert caplog.text == ""


def test_packaged_model_keeps_the_weights_and_drops_the_optimizer(tmp_path):
    import json

    import keras
    import numpy as np

    from tails.efficientdet import Tails, load_model
    from tails.models import model_status, package_model

    run = tmp_path / "run"
    run.mkdir()
    model = Tails()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.optimizer.build(model.trainable_variables)  # Adam's moments: saved with the weights
    model.save_weights(run / "best.weights.h5")
    (run / "log.csv").write_text("epoch,loss\n1,1.0\n")
    (run / "train.json").write_text(json.dumps({"seed": 42}))

    folder = package_model(run, "tails-test", models_dir=tmp_path / "models")
    packaged = folder / "tails.weights.h5"
    assert packaged.stat().st_size < 0.6 * (run / "best.weights.h5").stat().st_size
    assert packaged.stat().st_size < 20e6  # the size allowed for the bundled model
    assert model_status(packaged) == "experimental"
    assert (folder / "training_log.csv").read_text().startswith("epoch")
    x = np.random.default_rng(0).normal(size=(2, 256, 256, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(load_model(packaged)(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_packaged_model_can_ship_other_weights_than_the_runs_best(tmp_path):
    import json

    import numpy as np

    from tails.efficientdet import Tails, load_model
    from tails.models import package_model, verify_model

    run = tmp_path / "run"
    run.mkdir()
    Tails().save_weights(run / "best.weights.h5")
    other = Tails()
    other.set_weights([w + 0.01 for w in other.get_weights()])
    other.save_weights(tmp_path / "soup.weights.h5")
    (run / "log.csv").write_text("epoch,loss\n1,1.0\n")
    (run / "train.json").write_text(json.dumps({"seed": 42}))

    folder = package_model(run, "tails-soup", models_dir=tmp_path / "models", weights=tmp_path / "soup.weights.h5")
    for a, b in zip(load_model(folder / "tails.weights.h5").get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert verify_model(folder) == []
