"""`codebert-heads report <study>`: the study's finished runs on one self-contained HTML page (`report.html`), and
online the same study as a W&B Report."""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from codesearch.errors import UserError
from codesearch.files import atomic_write_text
from codesearch.loading import load_data
from codesearch.runfolder import flat
from heads.models import encoder_for
from heads.naming import HeadId
from report.examples import attention_examples
from report.html import render
from report.record import ReportRecord
from report.study import Folder, StudyRuns
from tracking.wandb_log import resolve_mode

from .config import as_sections, load_config, to_plain
from .runs import Run, study_dir
from .schema import COMMAND_SECTIONS, Config

# Settings that never change a run's numbers, left out of the command lines shown.
NOT_SHOWN = {"runs_dir", "output_dir", "progress", "resume", "wandb"}


def command_line(run: Folder, study: str) -> str:
    """`codebert-heads <command> key=value ...`: the run's settings that differ from its command's defaults."""
    command = run.record.command
    if command not in COMMAND_SECTIONS:
        return f"# {command}: not a codebert-heads command"
    defaults = flat(to_plain(load_config(command)))
    sections = set(COMMAND_SECTIONS[command]) | {"seed", "threads"}
    changed = [f"{key}={_value(value)}" for key, value in flat(run.record.config).items()
               if key.split(".")[0] in sections - NOT_SHOWN and defaults.get(key) != value]
    positional = {"aggregate": [study], "compare": [s.get("name", "") for s in getattr(run.record, "studies", [])]}
    return " ".join(["codebert-heads", command, *positional.get(command, []), *changed])


def _value(value) -> str:
    text = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else "null" if value is None else str(value)
    return f"'{text}'" if any(c in text for c in " *[]") else text


def study_folder(cfg: DictConfig, study: str) -> Path:
    """The folder given, or the study's name under runs_dir; none given: the study the config's settings name."""
    if not study:
        study = str(study_dir(cfg))
    for candidate in (Path(study).expanduser(), Path(cfg.runs_dir).expanduser() / study):
        if candidate.is_dir():
            return candidate.resolve()
    raise UserError(f"no study folder {study!r} (looked in . and {cfg.runs_dir}/)")


def run_report(cfg: DictConfig, study: str) -> Path:
    folder = study_folder(cfg, study)
    runs = StudyRuns.read(folder)   # refused before anything is written when the folder holds no run
    with Run(cfg, "report", ReportRecord, study=folder.name, home=folder) as run:
        examples, note = head_examples(cfg, runs)
        page = render(runs, lambda r: command_line(r, folder.name), examples, note)
        run.begin()
        atomic_write_text(run.work / "index.html", page)
        record = ReportRecord(study_folder=str(folder), sections=runs.kinds(), missing=runs.missing(),
                              sources=[str(r.folder) for r in runs.records()],
                              wandb_report=publish_online(cfg, runs))
        record = run.finish(record, ["index.html"])
    print(f"report: {run.folder / 'index.html'}" + (f"; W&B report: {record.wandb_report}"
                                                      if record.wandb_report else ""))
    return run.folder


def head_examples(cfg: DictConfig, runs: StudyRuns, n_heads: int = 3, n_pairs: int = 2):
    """The most important heads' attention on the study's first pairs, with the model and data its ablation used;
    ([], why) when there is no map or they cannot be loaded here."""
    if runs.ablation is None:
        return [], ""
    singles = runs.ablation.single_heads().sort_values(["delta_mrr", "layer", "head"])
    heads = [HeadId(int(r.layer), int(r.head)) for r in singles.head(n_heads).itertuples()]
    # The model and data of a run that encoded them (an aggregate's own config names neither).
    made = next((run.record for run in [*runs.ablations, runs.evaluation] if run is not None), None)
    if made is None:
        return [], "The examples need the study's model and data, named by its ablate or evaluate runs: none is here."
    settings = as_sections(OmegaConf.merge(OmegaConf.structured(Config), made.config))
    try:
        encoder = encoder_for(settings.model, attn_implementation="eager")   # SDPA returns no attention weights
        task = load_data(settings.data, settings.corpus, settings.seed, progress=False).task
    except UserError as exc:
        return [], f"The examples need the study's model and data, which cannot be loaded here: {exc}"
    pairs = [(task.queries[i], task.candidates[task.gold[i]]) for i in range(min(n_pairs, len(task)))]
    return attention_examples(encoder, pairs, heads), ""


def publish_online(cfg: DictConfig, runs: StudyRuns) -> str:
    """The W&B Report's URL, or "" offline (said in one line) or when W&B fails (said; the page is written)."""
    if resolve_mode(str(cfg.wandb.mode)) != "online":
        print("W&B is offline or disabled: no W&B Report (the HTML report is complete)", file=sys.stderr)
        return ""
    try:
        from report.wandb_report import publish_report

        w = OmegaConf.to_object(cfg.wandb)
        entity = w.entity or default_entity()
        return publish_report(entity, w.project, runs.name, f"codebert-heads: {runs.name}",
                              "Which heads retrieval needs, what they encode, where they attend.", runs.job_types())
    except Exception as exc:  # noqa: BLE001  W&B's errors come in many types; none may cost the page
        print(f"W&B Report failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); the HTML "
              f"report is complete", file=sys.stderr)
        return ""


def default_entity() -> str:
    """The logged-in user's default W&B entity (wandb.entity empty)."""
    import wandb

    return wandb.Api(timeout=30).default_entity
