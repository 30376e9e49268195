"""W&B logging read back from offline runs, sweeps with and without a server, and aggregation."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import tracking.wandb_log as tracking
from experiments.cli import main
from experiments.sweep import program_command, schema
from tracking.local_sweep import SweepState
from tracking.sweep_file import check_command_lines, command_line, read_sweep_file

REPO = Path(__file__).resolve().parents[1]
WANDB = Path(sys.executable).parent / "wandb"
FAST = ["ablation.n_bootstrap=300", "ablation.n_permutations=300", "progress=false", "model.batch_size=5"]


def offline_runs(study_folder: Path) -> list[Path]:
    return sorted((study_folder / "wandb").glob("offline-run-*"))


def inspect(run_dir: Path) -> tuple[dict, dict]:
    """(the run record, the summary) of an offline run, read back by `wandb leet inspect`."""
    records = subprocess.run([str(WANDB), "leet", "inspect", "--json", str(run_dir)], capture_output=True,
                             text=True, check=True, timeout=120).stdout
    run_record = next(json.loads(line)["run"] for line in records.splitlines() if '"type":"run"' in line)
    summary = json.loads(subprocess.run([str(WANDB), "leet", "inspect", "--summary", "--json", str(run_dir)],
                                        capture_output=True, text=True, check=True, timeout=120).stdout)
    return run_record, summary


def only_study(runs_dir: Path) -> Path:
    studies = [p for p in runs_dir.iterdir() if p.is_dir() and p.name != "sweeps"]
    assert len(studies) == 1, studies
    return studies[0]


def test_offline_runs_hold_what_the_run_folders_hold(tmp_path, pairs_file, tiny_bert_dir):
    runs = tmp_path / "runs"
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"runs_dir={runs}", "wandb.mode=offline",
              *FAST]
    assert main(["evaluate", *common]) == 0
    assert main(["ablate", *common, "ablation.heads=1.*"]) == 0
    study = only_study(runs)
    logged = offline_runs(study)
    assert len(logged) == 2
    by_job = {}
    for run_dir in logged:
        record, summary = inspect(run_dir)
        by_job[record["job_type"]] = (run_dir, record, summary)
    assert set(by_job) == {"baseline", "ablation"}

    _, record, summary = by_job["baseline"]
    metrics = json.loads((study / "evaluate" / "metrics.json").read_text())
    assert record["run_group"] == study.name and record["display_name"] == "baseline-whole_pool"
    assert summary["summary"]["eval/mrr"] == pytest.approx(metrics["mrr"])
    assert summary["summary"]["eval/csn/mrr"] == pytest.approx(metrics["protocols"]["csn"]["mrr"])

    run_dir, record, summary = by_job["ablation"]
    (folder,) = (study / "ablate").iterdir()
    run_json = json.loads((folder / "run.json").read_text())
    assert record["run_group"] == study.name
    assert record["display_name"] == "abl-L1Hx"
    config = record["config"]["update"]
    assert config["ablation"]["heads"] == "1.*" and config["study"] == study.name
    assert config["model"]["name"] == str(tiny_bert_dir) and config["corpus_hash"].startswith("sha256:")
    assert "ablation" in record["tags"]
    values = summary["summary"]
    assert values["eval/baseline_mrr"] == pytest.approx(run_json["baseline_mrr"])
    assert values["stats/n_significant"] == run_json["n_significant"]
    # The importance table's rows, as logged.
    table_file = next((run_dir / "files" / "media" / "table").glob("importance_*.table.json"))
    logged_table = json.loads(table_file.read_text())
    frame = pd.read_csv(folder / "importance.csv")
    assert logged_table["columns"] == list(frame.columns)
    assert [row[0] for row in logged_table["data"]] == frame["condition"].tolist()
    column = logged_table["columns"].index("delta_mrr")
    assert [row[column] for row in logged_table["data"]] == pytest.approx(frame["delta_mrr"].tolist())


def test_default_mode_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert tracking.resolve_mode("auto") == "offline"
    # What `wandb login` writes: a key for wandb's configured server, in the netrc file.
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib.wbauth import wbnetrc

    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    wbnetrc.write_netrc_auth(host=wandb_setup.singleton().settings.base_url, api_key="k" * 40)
    assert tracking.resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode("auto") == "disabled"
    assert tracking.resolve_mode("offline") == "offline"


def test_a_wandb_failure_loses_no_result(tmp_path, pairs_file, tiny_bert_dir, monkeypatch, capsys):
    def broken(*_args, **_kwargs):
        raise RuntimeError("W&B is down")

    monkeypatch.setattr(tracking, "_log", broken)
    out = tmp_path / "run"
    assert main(["ablate", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={out}",
                 f"runs_dir={tmp_path / 'runs'}", "wandb.mode=offline", "ablation.heads=0.0", *FAST]) == 0
    assert "W&B logging failed (RuntimeError: W&B is down)" in capsys.readouterr().err
    assert (out / "run.json").is_file() and (out / "importance.csv").is_file()


@pytest.mark.parametrize("sweep_file", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_sweep_file_is_valid_and_its_command_lines_fit_the_schema(sweep_file):
    command = program_command(sweep_file)   # each file is checked against its own program's settings
    assert command == Path(yaml.safe_load(sweep_file.read_text())["program"]).stem
    schema_of_program = schema(command)
    spec = read_sweep_file(sweep_file, schema_of_program)
    assert spec["command"] == ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
    assert (REPO / spec["program"]).is_file()
    expected = 1
    for parameter in spec["parameters"].values():
        expected *= len(parameter.get("values", [None]))
    # every grid point, accepted by the schema
    assert check_command_lines(spec, sweep_file, schema_of_program) == expected


def test_command_line_is_the_agents():
    spec = {"program": "sweeps/ablate.py", "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]}
    argv = command_line(spec, {"ablation.layer": 3, "ablation.head": 7, "model.normalize": None}, "python")
    assert argv == ["/usr/bin/env", "python", "sweeps/ablate.py", "ablation.layer=3", "ablation.head=7",
                    "model.normalize=None"]
    assert command_line({"program": "p.py"}, {"a.b": 1}, "python") == ["/usr/bin/env", "python", "p.py", "--a.b=1"]


def write_sweep(path: Path, parameters: dict, program: Path = REPO / "sweeps" / "ablate.py") -> Path:
    spec = {"name": path.stem, "program": str(program), "method": "grid",
            "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"],
            "parameters": {k: ({"values": v} if isinstance(v, list) else {"value": v}) for k, v in parameters.items()}}
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def test_sweep_interrupted_resumed_then_aggregated_equals_one_ablate(tmp_path, pairs_file, tiny_bert_dir):
    runs = tmp_path / "runs"
    fixed = {"data.path": str(pairs_file), "model.name": str(tiny_bert_dir), "runs_dir": str(runs),
             "ablation.n_bootstrap": 300, "ablation.n_permutations": 300, "progress": False, "model.batch_size": 5,
             "seed": 3, "ablation.correction": "bh"}
    sweep = write_sweep(tmp_path / "grid.yaml", {**fixed, "ablation.layer": [0, 1], "ablation.head": [0, 3]})
    assert main(["sweep", str(sweep), "--count", "3", f"runs_dir={runs}"]) == 0   # stopped after three runs
    state_file = next((runs / "sweeps").glob("grid-*/state.json"))
    assert len(json.loads(state_file.read_text())["runs"]) == 3
    assert main(["sweep", str(sweep), f"runs_dir={runs}"]) == 0                     # resumed: the fourth only
    state = json.loads(state_file.read_text())["runs"]
    assert len(state) == 4 and all(r["state"] == "finished" for r in state)
    assert len({json.dumps(r["config"], sort_keys=True) for r in state}) == 4     # nothing ran twice
    assert main(["sweep", str(sweep), f"runs_dir={runs}"]) == 0                     # finished: launches nothing
    assert len(json.loads(state_file.read_text())["runs"]) == 4

    study = only_study(runs)
    assert len(list((study / "ablate").iterdir())) == 4
    assert len(offline_runs(study)) == 4                                            # each sweep run logged offline
    record, summary = inspect(offline_runs(study)[0])
    assert record["display_name"].startswith("abl-L0") and "eval/delta_mrr" in summary["summary"]
    assert "stats/significant" not in summary["summary"]   # no correction over a family of one head
    # The statistics settings come from the runs: none is repeated here.
    assert main(["aggregate", str(study), f"runs_dir={runs}", "wandb.mode=offline"]) == 0
    assert main(["ablate", *[f"{k}={v}" for k, v in fixed.items()], "ablation.heads=0.0,0.3,1.0,1.3",
                 f"output_dir={tmp_path / 'one'}"]) == 0
    aggregated = (study / "aggregate" / "importance.csv").read_text()
    assert aggregated == (tmp_path / "one" / "importance.csv").read_text()
    assert (study / "aggregate" / "heatmap.png").is_file()

    # Another way of masking in the same study: the aggregate keeps each, one heatmap per way.
    assert main(["ablate", *[f"{k}={v}" for k, v in fixed.items()], "ablation.heads=0.0",
                 "ablation.mode=resample"]) == 0
    assert main(["aggregate", str(study), f"runs_dir={runs}"]) == 0
    table = pd.read_csv(study / "aggregate" / "importance.csv")
    assert sorted(zip(table["condition"], table["mode"]))[:2] == [("L0H0", "resample"), ("L0H0", "zero")]
    assert {p.name for p in (study / "aggregate").glob("heatmap*.png")} == {"heatmap-resample-both.png",
                                                                          "heatmap-zero-both.png"}
    record, _ = inspect(max(offline_runs(study), key=lambda p: p.stat().st_mtime))
    assert record["job_type"] == "aggregate" and record["run_group"] == study.name


def test_aggregate_takes_the_runs_settings_and_refuses_runs_that_disagree(tmp_path, pairs_file, tiny_bert_dir,
                                                                          capsys):
    runs = tmp_path / "runs"
    fixed = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"runs_dir={runs}", "progress=false",
             "ablation.n_permutations=200", "ablation.gradient=false"]
    assert main(["ablate", *fixed, "ablation.heads=0.0", "ablation.n_bootstrap=200"]) == 0
    assert main(["ablate", *fixed, "ablation.heads=0.3", "ablation.n_bootstrap=200"]) == 0
    study = only_study(runs)
    # A correction chosen for the aggregation on purpose wins; the rest comes from the runs.
    assert main(["aggregate", str(study), "ablation.correction=bh", "ablation.alpha=0.1"]) == 0
    record = json.loads((study / "aggregate" / "run.json").read_text())
    assert record["report_settings"] == {"seed": 0, "alpha": 0.1, "correction": "bh", "primary_test": "t",
                                         "n_bootstrap": 200, "n_permutations": 200}
    assert record["report_settings_from"]["ablation.correction"] == "aggregate command"
    assert record["report_settings_from"]["ablation.n_bootstrap"] == "runs"

    assert main(["ablate", *fixed, "ablation.heads=1.0", "ablation.n_bootstrap=300"]) == 0
    capsys.readouterr()
    assert main(["aggregate", str(study)]) == 2
    err = capsys.readouterr().err
    assert "ablation.n_bootstrap=" in err and "not made with one setting" in err


def test_a_run_interrupted_inside_is_run_again_on_resume(tmp_path):
    marker = tmp_path / "seen"
    program = tmp_path / "program.py"
    program.write_text(f"""import sys, pathlib
marker = pathlib.Path({str(marker)!r})
if not marker.exists():
    marker.write_text("x")
    sys.exit(130)   # killed by Ctrl-C the first time
sys.exit(0)
""")
    sweep = write_sweep(tmp_path / "s.yaml", {"seed": [1]}, program=program)
    assert main(["sweep", str(sweep), f"runs_dir={tmp_path}"]) == 130
    state = next((tmp_path / "sweeps").glob("s-*"))
    assert not (state / "state.json").exists()
    assert main(["sweep", str(sweep), f"runs_dir={tmp_path}"]) == 0
    assert json.loads((state / "state.json").read_text())["runs"][0]["state"] == "finished"


def test_one_process_per_sweep_and_its_state_survives_a_comment(tmp_path, capsys):
    program = tmp_path / "program.py"
    program.write_text("import sys\nsys.exit(0)\n")
    sweep = write_sweep(tmp_path / "s.yaml", {"seed": [1, 2]}, program=program)
    assert main(["sweep", str(sweep), "--count", "1", f"runs_dir={tmp_path}"]) == 0
    (state_folder,) = (tmp_path / "sweeps").glob("s-*")
    sweep.write_text("# the same sweep, with a note\n" + sweep.read_text())
    holder = SweepState(state_folder)                 # another sweep process holds it
    capsys.readouterr()
    assert main(["sweep", str(sweep), f"runs_dir={tmp_path}"]) == 2
    assert "another `codebert-heads sweep` is running this sweep" in capsys.readouterr().err
    holder.close()
    assert main(["sweep", str(sweep), f"runs_dir={tmp_path}"]) == 0      # resumes: only the second seed
    runs = json.loads((state_folder / "state.json").read_text())["runs"]
    assert [r["config"]["seed"] for r in runs] == [1, 2]


@pytest.mark.parametrize("text, message", [
    ("method: grid\nprogram: p.py\nparameters:\n  ablation.heads:\n    values: [3.10, \"L1H2\"]\n",
     "YAML read [3.1] as numbers"),
    ("method: bayes\nprogram: p.py\nmetric:\n  name: eval/delta_mrr\nparameters:\n  seed:\n    values: [1, 2]\n",
     "method bayes needs the metrics a W&B server collects"),
    ("method: grid\nprogram: p.py\ncommand: [a, b]\nparameters:\n  seed:\n    value: 1\n", None),
    ("method: grid\nprogram: p.py\nparameters:\n  model.nmae:\n    value: x\n", "'model.nmae' is not a config key"),
    ("method: nonsense\nprogram: p.py\nparameters:\n  seed:\n    value: 1\n", "not a valid sweep"),
    ("method: grid\nprogram: p.py\nparameters:\n  ablation.mode:\n    values: [zero, blur]\n",
     "refused by the config schema"),
])
def test_bad_sweep_files(tmp_path, capsys, text, message):
    if message is None:  # a valid file, but settings for the runs belong in it, not on the sweep's command line
        (tmp_path / "bad.yaml").write_text(text)
        assert main(["sweep", str(tmp_path / "bad.yaml"), "seed=3"]) == 2
        assert "codebert-heads sweep takes runs_dir=... only" in capsys.readouterr().err
        return
    (tmp_path / "bad.yaml").write_text(text)
    assert main(["sweep", str(tmp_path / "bad.yaml"), f"runs_dir={tmp_path}"]) == 2
    assert message in capsys.readouterr().err


def test_failed_runs_run_again_only_when_asked(tmp_path):
    program = tmp_path / "program.py"
    program.write_text(f"""import pathlib, sys
flag = pathlib.Path({str(tmp_path / 'healthy')!r})
sys.exit(0 if flag.exists() else 9)
""")
    sweep = write_sweep(tmp_path / "s.yaml", {"seed": [1, 2]}, program=program)
    assert main(["sweep", str(sweep), f"runs_dir={tmp_path}"]) == 1                # failed runs: not a success
    state_file = next((tmp_path / "sweeps").glob("s-*/state.json"))
    assert [r["state"] for r in json.loads(state_file.read_text())["runs"]] == ["failed", "failed"]
    (tmp_path / "healthy").write_text("x")
    assert main(["sweep", str(sweep), f"runs_dir={tmp_path}"]) == 1      # failed ones are not retried silently
    assert len(json.loads(state_file.read_text())["runs"]) == 2
    assert main(["sweep", str(sweep), "--retry-failed", f"runs_dir={tmp_path}"]) == 0
    assert [r["state"] for r in json.loads(state_file.read_text())["runs"]] == ["finished", "finished"]


def test_aggregate_without_runs_and_from_a_fake_wandb_api(tmp_path, capsys, pairs_file, tiny_bert_dir):
    assert main(["aggregate", str(tmp_path), f"runs_dir={tmp_path}"]) == 2
    assert "no finished ablation runs" in capsys.readouterr().err
    assert main(["aggregate", "wandb:some-study", "wandb.mode=offline"]) == 2
    assert "reading a study from W&B needs wandb.mode=online" in capsys.readouterr().err

    # The W&B API path: runs' results artifacts downloaded into run folders.
    source = tmp_path / "made"
    assert main(["ablate", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={source}",
                 f"runs_dir={tmp_path / 'runs'}", "ablation.heads=0.1", *FAST]) == 0

    class Artifact:
        type = "results"

        def download(self, root):
            import shutil
            shutil.copytree(source, root)

    class Run:  # what wandb.apis.public.Run offers that aggregation uses
        name, id = "abl-L00-H01", "r4nd0m"

        def logged_artifacts(self):
            return [Artifact()]

    class Api:
        def runs(self, path, filters):
            assert path == "codebert-heads" and filters["group"] == "g"
            assert filters["jobType"] in ("ablation", "prune")
            return [Run()] if filters["jobType"] == "ablation" else []

    from ablation.aggregation import finished_runs
    from tracking.settings import WandbConfig
    from tracking.wandb_log import download_study

    folder = download_study(WandbConfig(), "g", api=Api())
    assert [run.folder.name for run in finished_runs(folder)] == ["abl-L00-H01-r4nd0m"]
