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


def test_subclass_options_are_the_parents_plus_their_own():
    """FewShotDataModule and AttackedDataModule forward **data_options: the CLI and evaluate.py see
    every SequenceDataModule option (new ones included) without a copied signature."""
    from genrec.data import SequenceDataModule
    from genrec.data.datamodule import data_options
    from genrec.robust import AttackedDataModule

    base = data_options(SequenceDataModule)
    assert "loader" in base and "fit_on_validation" in base
    assert data_options(FewShotDataModule) == ["train_user_fraction", "fraction_seed", *base]
    assert data_options(AttackedDataModule) == ["attack", *base]
    dm = FewShotDataModule(train_user_fraction=0.5, dataset="synthetic", max_seq_len=12, fit_on_validation=True)
    assert dm.hparams.fit_on_validation and dm.hparams.train_user_fraction == 0.5
    with pytest.raises(TypeError):
        FewShotDataModule(dataset="synthetic", max_len=12)  # a misspelt option is not swallowed


def test_a_negative_fraction_seed_is_refused_by_its_key_name():
    with pytest.raises(DataError, match="data.fraction_seed must be >= 0, got -1"):
        FewShotDataModule(fraction_seed=-1, dataset="synthetic")
