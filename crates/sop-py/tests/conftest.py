import pytest

import sop


@pytest.fixture
def db(tmp_path):
    return sop.Database(sop.DatabaseOptions(stores_folders=[str(tmp_path / "db")]))


@pytest.fixture
def ctx():
    return sop.Context()
