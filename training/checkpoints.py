"""Where an interrupted fine-tuning run resumes: the `last.ckpt` Lightning keeps in the run's work folder, if it
was written by a run with the same settings."""
from __future__ import annotations

from pathlib import Path

import torch

from codesearch.errors import UserError
from codesearch.runfolder import differing_keys

LAST = "last.ckpt"
BEST = "best"           # best.ckpt: the epoch with the highest val/mrr so far


def resume_point(folder: Path, signature: dict, resume: bool) -> str | None:
    """The checkpoint to continue from (None: start afresh). A checkpoint of other settings is refused."""
    last = Path(folder) / LAST
    if not (resume and last.is_file()):
        return None
    try:   # memory-mapped: only the small signature is read now
        stored = torch.load(last, map_location="cpu", mmap=True, weights_only=False)["finetune"]["signature"]
    except Exception as exc:  # noqa: BLE001  a checkpoint cut short by a kill, or not ours
        raise UserError(f"resume=true, but {last} cannot be read ({type(exc).__name__}); run with resume=false to "
                        f"start afresh") from None
    if stored != signature:
        raise UserError(f"resume=true, but {last} was written with other settings (differing: "
                        f"{', '.join(differing_keys(stored, signature))}); use the same settings, another "
                        f"output_dir, or resume=false")
    return str(last)
