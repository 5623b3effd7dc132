"""Dataset adapters (one per corpus format); each has a card in ``datasets/<name>/card.md``."""

from __future__ import annotations

from mosear.adapters.base import ClipRecord, DatasetAdapter, safe_id
from mosear.adapters.ca_mer import CaMerAdapter
from mosear.adapters.crema_d import CremaDAdapter
from mosear.adapters.dfew import DfewAdapter
from mosear.adapters.generic import GenericAdapter
from mosear.adapters.mafw import MafwAdapter
from mosear.adapters.mer2023 import Mer2023Adapter
from mosear.adapters.ravdess import RavdessAdapter
from mosear.adapters.source import SourceConfig
from mosear.adapters.splice import SpliceAdapter

ADAPTERS: dict[str, type[DatasetAdapter]] = {
    "generic": GenericAdapter,
    "ravdess": RavdessAdapter,
    "crema_d": CremaDAdapter,
    "mer2023": Mer2023Adapter,
    "dfew": DfewAdapter,
    "mafw": MafwAdapter,
    "ca_mer": CaMerAdapter,
    "splice": SpliceAdapter,
}


def get_adapter(name: str) -> DatasetAdapter:
    try:
        return ADAPTERS[name]()
    except KeyError:
        raise KeyError(f"unknown adapter {name!r}; known: {sorted(ADAPTERS)}") from None


__all__ = ["ADAPTERS", "ClipRecord", "DatasetAdapter", "SourceConfig", "get_adapter", "safe_id"]
