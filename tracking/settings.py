"""The `wandb` section of the config (light: the command line checks a config before importing wandb)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from codesearch.settings import setting


class WandbMode(StrEnum):
    auto = "auto"
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class WandbConfig:
    mode: WandbMode = setting("auto ($WANDB_MODE if set, else online with credentials, else offline), online, "
                              "offline or disabled", WandbMode.auto)
    project: str = setting("W&B project", "codebert-heads")
    entity: str = setting("W&B entity (user or team); empty = your default", "")
    tags: list[str] = setting("extra tags for every run", factory=list)
    init_timeout: float = setting("seconds to wait for W&B to start a run before logging offline instead", 60.0)
