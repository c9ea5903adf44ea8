"""``python -m adapt.data download``: offline, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest
import yaml

from adapt.data.__main__ import main
from adapt.data.cards import load_card
from adapt.data.download import download
from adapt.data.sources import list_cases
from adapt.data.synthetic import write_ct_phantoms
from adapt.errors import DataError, DataNotFoundError


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve ``tmp_path/www`` on 127.0.0.1 (no proxy) for the test's duration."""
    for key in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def msd_tar(tmp_path, www):
    """A small MSD task archive (``Task99_Fake/`` at its top), and its md5."""
    write_ct_phantoms(tmp_path / "src" / "Task99_Fake", num_cases=2, shape=(16, 16, 6))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(tmp_path / "src" / "Task99_Fake", arcname="Task99_Fake")
    (www / "Task99_Fake.tar").write_bytes(buffer.getvalue())
    return hashlib.md5(buffer.getvalue()).hexdigest()


def card_file(tmp_path, url, md5=None, **source):
    card = yaml.safe_load(open("data_cards/msd_liver.yaml"))
    card["name"] = "fake_msd"
    card["source"] = {"kind": "msd", "task": "Task99_Fake", "url": url, **({"md5": md5} if md5 else {}), **source}
    card["labels"] = {"background": 0, "liver": 1, "spine": 2}
    path = tmp_path / "fake_msd.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def test_download_verifies_md5_and_unpacks_the_msd_layout(tmp_path, server, capsys):
    www, base = server
    md5 = msd_tar(tmp_path, www)
    path = card_file(tmp_path, f"{base}/Task99_Fake.tar", md5)
    root = tmp_path / "data" / "Task99_Fake"
    assert main(["download", f"card={path}", f"root={root}"]) == 0
    assert f"data.root={root}" in capsys.readouterr().out
    cases = list_cases(load_card(path), root)
    assert [c.id for c in cases] == ["phantom_000", "phantom_001"]
    original = (tmp_path / "src" / "Task99_Fake" / "imagesTr" / "phantom_001.nii.gz").read_bytes()
    assert (root / "imagesTr" / "phantom_001.nii.gz").read_bytes() == original
    assert sorted(p.name for p in root.parent.iterdir()) == ["Task99_Fake"]  # no staging left


def test_wrong_md5_is_refused_and_leaves_nothing(tmp_path, server):
    www, base = server
    md5 = msd_tar(tmp_path, www)
    wrong = "0" * 32
    assert wrong != md5
    card = load_card(card_file(tmp_path, f"{base}/Task99_Fake.tar", wrong))
    root = tmp_path / "data" / "Task99_Fake"
    with pytest.raises(DataError, match=rf"Task99_Fake.tar failed \(expected md5 {wrong}\)") as err:
        download(card, root, progress=False)
    assert "Nothing was written" in str(err.value)
    assert not root.exists() and list((tmp_path / "data").iterdir()) == []


def test_a_missing_file_on_the_server_is_a_clear_error(tmp_path, server):
    _, base = server
    card = load_card(card_file(tmp_path, f"{base}/absent.tar"))
    with pytest.raises(DataError, match=r"downloading http://127\.0\.0\.1:\d+/absent.tar failed"):
        download(card, tmp_path / "data" / "x", progress=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_a_card_without_url_says_how_to_get_the_data(capsys):
    assert main(["download", "card=btcv"]) == 2
    message = capsys.readouterr().err
    assert "no public download URL" in message and "synapse.org" in message and "syn3193805" in message


def test_missing_btcv_data_says_how_to_get_it(tmp_path):
    card = load_card("btcv")
    with pytest.raises(DataNotFoundError, match="register on https://www.synapse.org") as err:
        list_cases(card, tmp_path / "RawData")
    assert str(tmp_path / "RawData") in str(err.value)


def test_bad_command_line(capsys):
    assert main(["download", "kard=msd_spleen"]) == 2
    assert "card=<stem or path>" in capsys.readouterr().err
    assert main(["fetch"]) == 2


def test_every_msd_card_carries_monai_s_url_and_md5():
    from monai.apps import DecathlonDataset

    for stem in ("msd_liver", "msd_spleen", "msd_hippocampus", "msd_prostate"):
        card = load_card(stem)
        task = card.source["task"]
        assert card.urls() == [(DecathlonDataset.resource[task], DecathlonDataset.md5[task])]
    assert np.all([load_card(s).urls() == [] for s in ("btcv", "ct_phantom", "mr_phantom", "aerial_phantom")])


def test_cards_command_lists_every_card_with_its_licence(capsys):
    from adapt.data.cards import shipped_cards

    assert main(["cards"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == shipped_cards()
    assert any(line.startswith("isic2018") and "CC-BY-NC-4.0" in line for line in lines)


def test_an_nnunet_archive_unpacks_into_its_dataset_folder_in_the_cache(tmp_path, server, monkeypatch, capsys):
    """``source.dataset`` names the default folder (cache) and the missing-data fix; the archive's one top folder
    becomes the root, as an MSD task's does."""
    from conftest import load_user_folders

    www, base = server
    load_user_folders().write_nnunet_folder(
        tmp_path / "src" / "Dataset099_Fake", num_cases=2, shape=(16, 12), file_ending=".png"
    )
    with tarfile.open(www / "Dataset099_Fake.tar", mode="w") as tar:
        tar.add(tmp_path / "src" / "Dataset099_Fake", arcname="Dataset099_Fake")
    card = yaml.safe_load(card_file(tmp_path, "x").read_text())
    card["source"] = {"kind": "nnunet", "dataset": "Dataset099_Fake", "url": f"{base}/Dataset099_Fake.tar"}
    card["labels"], card["targets"], card["dims"] = {"background": 0, "lesion": 1}, ["lesion"], 2
    card.pop("spacing", None)
    path = tmp_path / "fake_nnunet.yaml"
    path.write_text(yaml.safe_dump(card))
    monkeypatch.setenv("SAM2_ADAPT_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match="data.root=/path/to/Dataset099_Fake"):
        list_cases(load_card(path), tmp_path / "cache" / "Dataset099_Fake")
    assert main(["download", f"card={path}"]) == 0
    root = tmp_path / "cache" / "Dataset099_Fake"
    assert f"data.root={root}" in capsys.readouterr().out and (root / "dataset.json").is_file()
    assert [(c.id, c.image.name, c.label.name) for c in list_cases(load_card(path), root)] == [
        ("liver_000", "liver_000_0000.png", "liver_000.png"),
        ("liver_001", "liver_001_0000.png", "liver_001.png"),
    ]
