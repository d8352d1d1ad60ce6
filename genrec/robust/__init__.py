"""Robust training against data poisoning: attacks, LM user encoders, detector, calibrator, callback."""
from genrec.robust.attacks import AttackConfig, FakeProfiles
from genrec.robust.callback import FraudsterReweighting, WeightUpdate
from genrec.robust.signals import AnomalySignal, CoordinationSignal, DenseBlockSignal, UserSignal
from genrec.robust.data import AttackedDataModule

__all__ = ["AttackConfig", "FakeProfiles", "AttackedDataModule", "FraudsterReweighting", "WeightUpdate", "AnomalySignal", "CoordinationSignal", "DenseBlockSignal", "UserSignal"]
