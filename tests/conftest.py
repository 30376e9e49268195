import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_tiny_bert, make_tiny_roberta  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Corpora built by the tests go to a cache of their own, never the user's; no hub access."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["CODEBERT_HEADS_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_MODE"] = "offline"
    yield cache


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    return make_tiny_roberta(tmp_path_factory.mktemp("models") / "tiny-roberta")


@pytest.fixture(scope="session")
def builtin_encoder():
    from heads.encoder import load_encoder

    return load_encoder("builtin")
