"""Downloading MNIST from several sources, against a local HTTP server (no internet).

The server runs on 127.0.0.1 in a thread of the test process and serves, per
folder: nothing (404), an HTML page, truncated files, other data, or the
official IDX files of ``$MNIST_IDX_DIR``.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import io
import socket
import threading

import numpy as np
import pytest

from deeplearning_tutorial import datasets, download
from deeplearning_tutorial.datasets import DatasetError
from deeplearning_tutorial.mnist import ensure_dataset

HTML_PAGE = b"<!DOCTYPE html>\n<html><body><h1>Proxy: please log in</h1></body></html>\n"


class Routes(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path]``: bytes, or ``("cut", bytes)`` sent half, then hung up."""

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        if isinstance(route, tuple) and route[0] == "endless":  # no length given, never stops
            self.send_response(200)
            self.end_headers()
            self.close_connection = True
            with contextlib.suppress(OSError):
                while True:
                    self.wfile.write(route[1])
            return
        cut = isinstance(route, tuple)
        body = route[1] if cut else route
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if body.startswith(b"<!") else "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)
        if cut:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(monkeypatch):
    """A loopback HTTP server; ``server.url(path)`` is the address of ``path`` on it."""
    for name in ("no_proxy", "NO_PROXY"):  # a proxy from the environment must not see these
        monkeypatch.setenv(name, "127.0.0.1")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Routes)
    httpd.daemon_threads = True
    httpd.routes = {}
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def idx_gz(idx_dir) -> dict[str, bytes]:
    """The four official IDX files as served by a mirror: ``{"train-images-idx3-ubyte.gz": bytes, ...}``."""
    return {f"{name}.gz": (idx_dir / f"{name}.gz").read_bytes() for name in datasets.IDX_FILES.values()}


def serve_folder(server, folder: str, files: dict[str, object]) -> str:
    server.routes.update({f"/{folder}/{name}": body for name, body in files.items()})
    return server.url(f"/{folder}/")


def other_labels(gz: bytes) -> bytes:
    """A well-formed gzip'd labels file whose first label differs from the official one."""
    content = bytearray(gzip.decompress(gz))
    content[8] = (content[8] + 1) % 10
    return gzip.compress(bytes(content))


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_default_sources_and_their_configuration(monkeypatch):
    monkeypatch.delenv(download.MIRRORS_ENV, raising=False)
    assert download.configured_sources() == [
        "http://www.iro.umontreal.ca/~lisa/deep/data/mnist/mnist.pkl.gz",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://yann.lecun.com/exdb/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ]
    monkeypatch.setenv(download.MIRRORS_ENV, " https://a.example/mnist/, https://b.example/x.pkl.gz https://a.example/mnist/")
    assert download.configured_sources() == ["https://a.example/mnist/", "https://b.example/x.pkl.gz"]
    assert download.configured_sources(["https://c.example/"]) == [
        "https://c.example/", "https://a.example/mnist/", "https://b.example/x.pkl.gz"]
    monkeypatch.setenv(download.MIRRORS_ENV, " , ")
    assert download.configured_sources() == list(download.DEFAULT_SOURCES)


def test_progress_line_shows_size_speed_and_eta():
    mib = 2**20
    assert download.format_progress("f.gz", 5 * mib, 10 * mib, 2.0) == \
        "f.gz [############............]  50% 5.0/10.0 MiB  2.5 MiB/s  ETA 0:02"
    assert download.format_progress("f.gz", 10 * mib, 10 * mib, 4.0) == \
        "f.gz [########################] 100% 10.0/10.0 MiB  2.5 MiB/s"
    assert download.format_progress("f.gz", 3 * mib, None, 2.0) == "f.gz 3.0 MiB  1.5 MiB/s"
    assert download.format_progress("f.gz", 0, 200 * mib, 0.0) == \
        "f.gz [........................]   0% 0.0/200.0 MiB  -- KiB/s"
    assert download.format_progress("f.gz", 1 * mib, 200 * mib, 1.0).endswith("ETA 3:19")
    assert download.format_progress("l.gz", 10 * 2**10, 28 * 2**10, 0.5) == \
        "l.gz [########................]  35% 10/28 KiB  20 KiB/s  ETA 0:01"
    assert download.format_progress("l.gz", 10 * 2**10, None, 0.5) == "l.gz 10 KiB  20 KiB/s"


def test_terminal_progress_redraws_one_line_per_file():
    now = [0.0]
    stream = io.StringIO()
    bar = download.TerminalProgress(stream, clock=lambda: now[0])
    bar.start("a.gz", 2 * 2**20)
    for done in range(1, 9):
        now[0] += 0.125
        bar.update(done * 2**18)
    bar.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.split("\r")[-1] == \
        "a.gz [########################] 100% 2.0/2.0 MiB  2.0 MiB/s\x1b[K\n"


def test_falls_back_past_404_html_truncated_and_other_data_to_a_verified_mirror(
        server, idx_gz, mnist, tmp_path, capsys):
    target = tmp_path / "mnist.pkl.gz"
    target.write_bytes(b"the old file")
    sources = [
        server.url("/nothing/mnist.pkl.gz"),
        serve_folder(server, "html", {name: HTML_PAGE for name in idx_gz}),
        serve_folder(server, "cut", {name: gz[: len(gz) // 2] for name, gz in idx_gz.items()}),
        serve_folder(server, "other", {**idx_gz, "t10k-labels-idx1-ubyte.gz": other_labels(
            idx_gz["t10k-labels-idx1-ubyte.gz"])}),
        serve_folder(server, "good", idx_gz),
    ]
    log = io.StringIO()
    assert download.download_dataset(target, sources, log=log) == target

    out = capsys.readouterr().out.splitlines()
    assert out == [f"Downloading data from {url}" for url in sources]
    skipped = log.getvalue().splitlines()
    assert len(skipped) == 6
    assert skipped[0] == f"  skipped {sources[0]}: HTTP error 404 Not Found"
    assert skipped[1].startswith(f"  skipped {sources[1]}: train-labels-idx1-ubyte.gz "
                                 f"is not a gzip file but an HTML page")
    assert skipped[2].startswith(f"  skipped {sources[2]}: train-labels-idx1-ubyte.gz "
                                 f"is truncated or corrupt")
    assert skipped[3].startswith(f"  skipped {sources[3]}: t10k-labels-idx1-ubyte.gz: "
                                 f"the SHA-256 of its decompressed content")
    assert skipped[4:] == [f"  building {target} from the verified IDX files",
                           f"  verified MNIST from {sources[4]}, saved to {target}"]
    # the result is the build from the IDX folder (``mnist``, checked against the IDX files elsewhere)
    for (x, y), (x_ref, y_ref) in zip(datasets.read_dataset(target), mnist):
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
    assert listing(tmp_path) == ["mnist.pkl.gz"]


def test_pickle_source_is_kept_as_served_once_its_arrays_are_mnist(server, mnist_path, small_mnist, tmp_path):
    served = mnist_path.read_bytes()
    server.routes["/small/mnist.pkl.gz"] = small_mnist.read_bytes()  # a dataset, but not MNIST
    server.routes["/pkl/mnist.pkl.gz"] = served
    sources = [server.url("/small/mnist.pkl.gz"), server.url("/pkl/mnist.pkl.gz")]
    log = io.StringIO()
    target = tmp_path / "mnist.pkl.gz"
    download.download_dataset(target, sources, log=log)
    assert target.read_bytes() == served
    assert "train set has shapes x(2000, 784)" in log.getvalue().splitlines()[0]


def test_every_source_failing_lists_each_with_its_error_and_keeps_the_old_file(server, idx_gz, tmp_path):
    target = tmp_path / "mnist.pkl.gz"
    target.write_bytes(b"the old file")
    sources = [
        server.url("/nothing/mnist.pkl.gz"),
        serve_folder(server, "html", {name: HTML_PAGE for name in idx_gz}),
        closed_port_url(),
    ]
    with pytest.raises(DatasetError) as error:
        download.download_dataset(target, sources, log=io.StringIO())
    lines = str(error.value).splitlines()
    assert lines[0] == f"could not download MNIST to {target}; every source failed:"
    assert lines[1] == f"  {sources[0]}: HTTP error 404 Not Found"
    assert lines[2].startswith(f"  {sources[1]}: ") and "HTML page" in lines[2]
    assert lines[3].startswith(f"  {sources[2]}: train-labels-idx1-ubyte.gz: cannot connect (")
    assert "refused" in lines[3]
    assert download.MIRRORS_ENV in lines[4] and "--mirror URL" in lines[4]
    assert f"    python scripts/prepare_data.py --from-idx DIR --output {target}" in lines
    assert target.read_bytes() == b"the old file"
    assert listing(tmp_path) == ["mnist.pkl.gz"]


def test_connection_closed_mid_file_keeps_the_old_file(server, mnist_path, tmp_path):
    server.routes["/cut/mnist.pkl.gz"] = ("cut", mnist_path.read_bytes())
    target = tmp_path / "mnist.pkl.gz"
    target.write_bytes(b"the old file")
    with pytest.raises(DatasetError, match=r"the connection closed after \d+ of \d+ bytes"):
        download.download_dataset(target, [server.url("/cut/mnist.pkl.gz")], log=io.StringIO())
    assert target.read_bytes() == b"the old file"
    assert listing(tmp_path) == ["mnist.pkl.gz"]


def test_ctrl_c_during_a_download_keeps_the_old_file(server, idx_gz, tmp_path):
    class CtrlC(download.Progress):
        def update(self, done):
            if done > 2**20:
                raise KeyboardInterrupt

    target = tmp_path / "mnist.pkl.gz"
    target.write_bytes(b"the old file")
    with pytest.raises(KeyboardInterrupt):
        download.download_dataset(target, [serve_folder(server, "good", idx_gz)], progress=CtrlC(),
                                  log=io.StringIO())
    assert target.read_bytes() == b"the old file"
    assert listing(tmp_path) == ["mnist.pkl.gz"]


def test_missing_mnist_is_fetched_from_the_configured_mirror(server, mnist_path, mnist, tmp_path,
                                                             monkeypatch, capsys):
    server.routes["/pkl/mnist.pkl.gz"] = mnist_path.read_bytes()
    monkeypatch.setenv(download.MIRRORS_ENV, f"{server.url('/nothing/')} {server.url('/pkl/mnist.pkl.gz')}")
    loaded = ensure_dataset(tmp_path / "mnist.pkl.gz")
    for (x, y), (x_ref, y_ref) in zip(loaded, mnist):
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"Downloading data from {server.url('/nothing/')}",
                                         f"Downloading data from {server.url('/pkl/mnist.pkl.gz')}"]
    assert "skipped" in captured.err


def test_prepare_data_download_with_a_mirror_option(server, mnist_path, tmp_path):
    from conftest import REPO, run_python

    server.routes["/pkl/mnist.pkl.gz"] = mnist_path.read_bytes()
    env = {download.MIRRORS_ENV: server.url("/nothing/mnist.pkl.gz"), "no_proxy": "127.0.0.1"}
    out = tmp_path / "mnist.pkl.gz"
    result = run_python("scripts/prepare_data.py", "--download", "--mirror", server.url("/pkl/mnist.pkl.gz"),
                        "--output", str(out), cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Downloading data from {server.url('/pkl/mnist.pkl.gz')}",
        f"wrote {out} (verified against the official MNIST checksums)",
    ]
    assert out.read_bytes() == mnist_path.read_bytes()


def test_prepare_data_behind_a_proxy_never_destroys_a_dataset(prepare_data, server, idx_gz, mnist_path,
                                                              tmp_path, monkeypatch, capsys):
    """A proxy answers every request with an HTML page (issue 14's case)."""
    proxy = serve_folder(server, "proxy", {name: HTML_PAGE for name in [*idx_gz, "mnist.pkl.gz"]})
    monkeypatch.setenv(download.MIRRORS_ENV, f"{proxy}mnist.pkl.gz {proxy}")
    good = tmp_path / "good" / "mnist.pkl.gz"
    good.parent.mkdir()
    good.write_bytes(mnist_path.read_bytes())
    assert prepare_data.main(["--download", "--output", str(good)]) == 0
    assert capsys.readouterr().out == \
        f"{good} is already there (verified against MNIST's checksums); nothing to download\n"
    assert good.read_bytes() == mnist_path.read_bytes()

    damaged = tmp_path / "damaged" / "mnist.pkl.gz"  # fails verification, but is not ours to delete
    damaged.parent.mkdir()
    damaged.write_bytes(mnist_path.read_bytes()[:-8])
    assert prepare_data.main(["--download", "--output", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert f"  {proxy}mnist.pkl.gz: mnist.pkl.gz is not a gzip file but an HTML page" in err
    assert "Traceback" not in err
    assert damaged.read_bytes() == mnist_path.read_bytes()[:-8]
    assert listing(damaged.parent) == ["mnist.pkl.gz"]


def test_prepare_data_ctrl_c_says_the_file_is_untouched(prepare_data, server, idx_gz, tmp_path,
                                                        monkeypatch, capsys):
    class CtrlC(download.Progress):
        def update(self, done):
            raise KeyboardInterrupt

    monkeypatch.setattr(download, "default_progress", CtrlC)
    target = tmp_path / "mnist.pkl.gz"
    status = prepare_data.main(["--download", "--mirror", serve_folder(server, "good", idx_gz),
                                "--output", str(target)])
    assert status == 130
    assert capsys.readouterr().err.endswith(f"interrupted; {target} is as it was before\n")
    assert listing(tmp_path) == []


def test_a_source_that_never_stops_sending_is_cut_off_at_the_size_bound(server, tmp_path):
    target = tmp_path / "mnist.pkl.gz"
    target.write_bytes(b"the old file")
    server.routes["/endless/mnist.pkl.gz"] = ("endless", b"\x1f\x8b" * 2**15)
    server.routes["/long/train-labels-idx1-ubyte.gz"] = b"\x1f\x8b" * 2**16  # announces 128 KiB
    log = io.StringIO()
    with pytest.raises(DatasetError) as error:
        download.download_dataset(target, [server.url("/endless/mnist.pkl.gz"), server.url("/long/")], log=log)
    limit = download.MAX_DOWNLOAD_BYTES["mnist.pkl.gz"]
    assert f"mnist.pkl.gz: more than {limit} bytes arrived" in str(error.value)
    assert f"train-labels-idx1-ubyte.gz: the server announces 131072 bytes, more than the " \
           f"{download.MAX_DOWNLOAD_BYTES['train-labels-idx1-ubyte.gz']}" in str(error.value)
    assert target.read_bytes() == b"the old file" and listing(tmp_path) == ["mnist.pkl.gz"]


def test_a_pickle_that_decompresses_past_mnist_s_size_is_refused(server, tmp_path):
    bomb = gzip.compress(b"\x80\x02" + bytes(download.MAX_PICKLE_BYTES + 2**20))
    server.routes["/bomb/mnist.pkl.gz"] = bomb
    with pytest.raises(DatasetError, match=f"decompresses to more than the {download.MAX_PICKLE_BYTES} bytes"):
        download.download_dataset(tmp_path / "mnist.pkl.gz", [server.url("/bomb/mnist.pkl.gz")], log=io.StringIO())
    assert listing(tmp_path) == []
