#!/usr/bin/env python3
"""Fetch the onnxruntime C/C++ API headers into a cache outside the repository.

The onnxruntime wheel ships no headers, so the build takes them from the npm
package ``com.github.asus4.onnxruntime@0.4.9`` (MIT licence), which carries the
official onnxruntime 1.29 headers. Only the header files are extracted, while
the archive streams past, and they are kept only if the archive's sha512 matches
the registry's. Prints the include directory.

    python fetch_ort_headers.py            # fetch if needed, print the directory
    python fetch_ort_headers.py --cache D  # use D instead of the default cache

``ORT_INCLUDE_DIR`` short-circuits everything: that directory is printed as is.
The default cache is ``$ONNX_SNN_CACHE`` or ``$XDG_CACHE_HOME/onnx-snn`` or
``~/.cache/onnx-snn``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

PACKAGE = "com.github.asus4.onnxruntime"
VERSION = "0.4.9"
ORT_VERSION = "1.29"
TARBALL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
SHA512 = ("BkzxduSZ9IkeDP6Q8lz2TFU2ie7hSSvS7ZIfzMooExoq0CNzJnuuGaUJ7IsojBgqO4ouD1jXah8OYyJbCN29Fg==")
HEADERS = ("package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64_x86_64-simulator/"
           "onnxruntime.framework/Headers/")
REQUIRED = ("onnxruntime_c_api.h", "onnxruntime_cxx_api.h", "onnxruntime_cxx_inline.h")


def default_cache() -> Path:
    """The cache root: ``$ONNX_SNN_CACHE``, else ``$XDG_CACHE_HOME/onnx-snn``, else ~/.cache."""
    if os.environ.get("ONNX_SNN_CACHE"):
        return Path(os.environ["ONNX_SNN_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "onnx-snn"


class _HashingReader:
    """A file-like wrapper that hashes everything read through it."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.digest = hashlib.sha512()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data


def fetch(cache: Path) -> Path:
    """The include directory, downloading the headers into ``cache`` if needed."""
    target = cache / f"onnxruntime-headers-{ORT_VERSION}"
    if all((target / name).is_file() for name in REQUIRED):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".headers-", dir=cache))
    try:
        with urllib.request.urlopen(TARBALL, timeout=120) as response:
            reader = _HashingReader(response)
            with tarfile.open(fileobj=reader, mode="r|gz") as archive:
                for member in archive:
                    if member.isfile() and member.name.startswith(HEADERS):
                        name = member.name[len(HEADERS):]
                        if "/" not in name and name.endswith(".h"):
                            source = archive.extractfile(member)
                            (staging / name).write_bytes(source.read())
            while reader.read(1 << 20):  # hash any trailing bytes too
                pass
        got = base64.b64encode(reader.digest.digest()).decode()
        if got != SHA512:
            raise RuntimeError(f"{TARBALL}: sha512 {got} does not match the registry's {SHA512}")
        missing = [name for name in REQUIRED if not (staging / name).is_file()]
        if missing:
            raise RuntimeError(f"{TARBALL}: no {', '.join(missing)} under {HEADERS}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="cache root directory")
    args = parser.parse_args()
    if os.environ.get("ORT_INCLUDE_DIR"):
        print(os.environ["ORT_INCLUDE_DIR"])
        return 0
    try:
        print(fetch(args.cache or default_cache()))
    except (OSError, RuntimeError, tarfile.TarError) as error:
        print(f"fetch_ort_headers: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
