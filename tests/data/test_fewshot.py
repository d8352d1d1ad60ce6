import json

import numpy as np
import pytest

from genrec.data import DataError
from genrec.data.fewshot import FewShotDataModule

OPTIONS = {"num_users": 200, "num_items": 60, "num_interests": 5, "seed": 0}


def test_training_uses_the_share_of_users_and_evaluation_all_of_them():
    dm = FewShotDataModule(train_user_fraction=0.1, dataset="synthetic", dataset_options=OPTIONS, max_seq_len=10)
    dm.setup("fit")
    full = FewShotDataModule(train_user_fraction=1.0, dataset="synthetic", dataset_options=OPTIONS, max_seq_len=10)
    full.setup("fit")
    assert len(dm.train_users) == 20
    assert set(dm.train_set.users.tolist()) <= set(dm.train_users.tolist())
    assert len(dm.train_set) < len(full.train_set) / 5
    assert len(dm.test_set) == len(full.test_set)
    again = FewShotDataModule(train_user_fraction=0.1, dataset="synthetic", dataset_options=OPTIONS, max_seq_len=10)
    again.setup("fit")
    assert np.array_equal(again.train_users, dm.train_users)  # the same users every run


def test_fraction_must_be_a_share():
    with pytest.raises(DataError, match="train_user_fraction"):
        FewShotDataModule(train_user_fraction=0.0)
