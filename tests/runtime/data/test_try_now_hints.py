"""Every missing-data message of a built-in data set (CIFAR-100) names --dataset synthetic as the way
to try graphc now, offline, before the data is there."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from graphc.errors import RunError
from graphc.lang.spec import DataSpec
from graphc.runtime.data import cifar100
from graphc.runtime.data.load import load_dataset
from tests.conftest import REPO, invoke

TRY_NOW = "add --dataset synthetic"


@pytest.fixture
def offline(monkeypatch):
    def refuse(request, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_offline_download_names_the_synthetic_try_out(tmp_path, offline):
    with pytest.raises(RunError) as info:
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)))
    assert "could not be downloaded" in str(info.value) and TRY_NOW in str(info.value)


def test_no_download_and_check_data_name_it_too(tmp_path):
    with pytest.raises(RunError) as info:
        load_dataset(DataSpec(dataset="cifar100", root=str(tmp_path)), download=False)
    assert "downloading is turned off" in str(info.value) and TRY_NOW in str(info.value)
    with pytest.raises(RunError) as probe:
        cifar100.probe_cifar100(tmp_path)
    assert TRY_NOW in str(probe.value)


def test_the_train_command_offline_says_how_to_try_graphc_now(tmp_path, offline):
    spec = REPO / "specs" / "shared_reuse_coarse.toml"
    result = invoke("train", spec, "--data-dir", tmp_path / "data", "--out", tmp_path / "runs", code=1)
    message = " ".join(result.stderr.split())
    assert "CIFAR-100 was not found" in message and "--dataset synthetic (generated images, no download)" in message
