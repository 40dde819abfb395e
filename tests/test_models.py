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
