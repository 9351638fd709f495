"""Neural-network layer: datasets, batched models M1-M5 with and without BN, and a vectorised trainer."""

from bnlab.nn.convert import without_bn
from bnlab.nn.data import DATASETS, Dataset, load_dataset
from bnlab.nn.fetch import default_data_dir, fetch
from bnlab.nn.models import KINDS, BatchedNet, ModelSpec, init_batched, reference_module
from bnlab.nn.trainer import NetConfig, TrainResult, batch_schedule, evaluate, network_losses, train

__all__ = [
    "DATASETS",
    "KINDS",
    "BatchedNet",
    "Dataset",
    "ModelSpec",
    "NetConfig",
    "TrainResult",
    "batch_schedule",
    "default_data_dir",
    "evaluate",
    "fetch",
    "init_batched",
    "load_dataset",
    "network_losses",
    "reference_module",
    "train",
    "without_bn",
]
