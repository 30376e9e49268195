"""Faults a user meets: huge records, reruns over finished runs, folders that are not ours, full or read-only disks,
bad devices, shared folders, failed sweep runs, and the small things (messages that name the line, notes when a
setting is capped)."""
import errno
import json
import os
import random
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest

import ablation.study as study
from experiments.cli import main
from heads.models import load_encoder

FAST = ["ablation.n_bootstrap=200", "ablation.n_permutations=200", "progress=false", "model.batch_size=5",
        "ablation.heads=0.*"]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def leftovers(root: Path) -> list[Path]:
    """Temporary files and work folders anywhere below `root`."""
    return [path for path in root.rglob("*") if path.name.endswith((".tmp", ".partial", ".old"))]


# ---------------------------------------------------------------- 1. a huge record

@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_roberta_dir", "builtin"])
def test_long_texts_are_cut_before_tokenizing_to_the_same_tokens(request, fixture):
    """The encoder tokenizes only the head of a long text; its tokens are the tokenizer's own on the whole text,
    also where Unicode spaces and control characters (which BERT deletes, joining words) stand near the cut, and
    where there is no whitespace at all."""
    encoder = load_encoder(fixture if fixture == "builtin" else str(request.getfixturevalue(fixture)))
    rng = random.Random(0)
    alphabet = string.ascii_letters + "éü_(){}.,;+#"

    def text(words: int) -> str:
        pieces = []
        for _ in range(words):
            pieces.append("".join(rng.choice(alphabet) for _ in range(rng.choice([1, 3, 8, 40, 300]))))
            pieces.append(rng.choice([" ", "  ", "\n", "\t ", "\n\n    ", "   \n", "\x0c", "\x0b", "\u3000", "\x85",
                                      "\u00a0", "\r\n"]))
        return "".join(pieces)

    texts = [text(n) for n in (5, 400, 4000, 30000)] + ["x" * 50000 + " tail", " " * 5000 + "word " * 5000,
                                                         "f(a,b);" * 20000, "ab\x0ccd" * 3000]
    for max_length in (8, 64, 256):
        expected = [encoder.tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
        assert encoder.tokenize(texts, max_length) == expected


def test_a_huge_record_costs_memory_bounded_by_the_token_limit(tmp_path, tiny_bert_dir):
    """A 40 MB code record: tokenizing all of it took about 165 bytes per character (6.6 GB here)."""
    records = [{"query": f"query {i}", "code": f"def f{i}(x):\n    return x + {i}\n"} for i in range(4)]
    records.append({"query": "a huge one", "code": "value = compute(value) + 1\n" * 1_500_000})
    pairs = tmp_path / "huge.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in records))
    # The peak of the child's own memory (VmHWM): getrusage would also count the parent's, copied at the fork.
    script = ("from experiments.cli import main\n"
              f"code = main(['evaluate', 'data.path={pairs}', 'model.name={tiny_bert_dir}', "
              f"'output_dir={tmp_path / 'out'}', 'progress=false'])\n"
              "peak = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
              "print(code, peak)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    code, peak_kb = result.stdout.split()[-2:]
    assert code == "0", result.stderr
    assert int(peak_kb) < 2**20, f"peak RSS {int(peak_kb) / 2**20:.2f} GB"


# ---------------------------------------------------------------- 2, 3. nothing a user owns is lost

def test_a_rerun_keeps_the_finished_run_until_it_is_replaced(tmp_path, pairs_file, tiny_bert_dir, monkeypatch,
                                                            capsys):
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={tmp_path / 'run'}", *FAST]
    assert main(["ablate", *common]) == 0
    finished = files_of(tmp_path / "run")
    real_run = study.run_conditions

    def dies_after_one(*args, **kwargs):
        on_result = args[4]

        def once(condition, q, c):
            on_result(condition, q, c)
            raise KeyboardInterrupt
        return real_run(*args[:4], once, *args[5:], **kwargs)

    monkeypatch.setattr(study, "run_conditions", dies_after_one)
    capsys.readouterr()
    assert main(["ablate", *common]) == 130                     # a new run, killed in the middle
    assert files_of(tmp_path / "run") == finished               # the finished run is whole and untouched
    assert "resume=true" in capsys.readouterr().err
    monkeypatch.setattr(study, "run_conditions", real_run)
    assert main(["ablate", *common, "resume=true"]) == 0        # the interrupted run, continued, replaces it
    assert (tmp_path / "run" / "importance.csv").read_bytes() == finished["importance.csv"]
    assert leftovers(tmp_path) == []


def test_a_folder_that_is_no_run_folder_is_refused(tmp_path, pairs_file, tiny_bert_dir, capsys):
    mine = tmp_path / "mine"
    (mine / "conditions").mkdir(parents=True)
    (mine / "conditions" / "mine.json").write_text("{}")
    (mine / "importance.csv").write_text("my own table\n")
    before = files_of(mine)
    for command in (["ablate", *FAST], ["evaluate", "progress=false"]):
        assert main([*command, f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={mine}"]) == 2
        assert "is no finished" in capsys.readouterr().err
        assert files_of(mine) == before
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- 4. full and read-only disks

def test_a_run_of_another_command_is_never_replaced_and_a_users_files_outlive_a_rerun(tmp_path, pairs_file,
                                                                                       tiny_bert_dir, capsys):
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"runs_dir={tmp_path / 'runs'}", *FAST]
    assert main(["ablate", *common]) == 0
    (run,) = (tmp_path / "runs").glob("*/ablate/*")
    (run / "my_notes.txt").write_text("what I saw\n")
    (run / "figures").mkdir()
    (run / "figures" / "mine.png").write_bytes(b"png")
    before = files_of(run)
    # Same record file (run.json), another command: refused before any model loads, nothing touched.
    for command in (["attention", f"output_dir={run}"], ["aggregate", run.parent.parent.name, f"output_dir={run}"]):
        assert main([*command, *common]) == 2
        assert "holds a finished `ablate` run" in capsys.readouterr().err
        assert files_of(run) == before
    assert main(["ablate", *common]) == 0                        # replaced by a rerun: the user's files carried over
    assert (run / "my_notes.txt").read_text() == "what I saw\n" and (run / "figures" / "mine.png").is_file()
    assert json.loads((run / "run.json").read_text())["command"] == "ablate"
    # A hidden copy (a work or old folder) is no run of the study: aggregate reads one run.
    shutil.copytree(run, run.with_name(f".{run.name}.partial"))
    assert main(["aggregate", run.parent.parent.name, *common]) == 0
    assert "1 runs" in capsys.readouterr().out


def test_a_run_interrupted_before_any_result_leaves_nothing(tmp_path, pairs_file, tiny_bert_dir, monkeypatch,
                                                             capsys):
    def dies_at_once(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "run_conditions", dies_at_once)
    assert main(["ablate", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"runs_dir={tmp_path}",
                 *FAST]) == 130
    assert "resume=true" not in capsys.readouterr().err        # nothing to resume from: not offered
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("exchange", [True, False])
def test_replacing_a_folder_keeps_the_old_one_whole_until_the_new_one_is_in(tmp_path, monkeypatch, exchange):
    import codesearch.files as files

    if not exchange:   # a system without renameat2: moved aside under a unique name, then removed
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    old, new = tmp_path / "run", tmp_path / ".run.partial"
    old.mkdir()
    (old / "table.csv").write_text("old\n")
    (old / "mine.txt").write_text("a user's\n")
    new.mkdir()
    (new / "table.csv").write_text("new\n")
    files.replace_directory(new, old, carry=lambda name: name != "table.csv")
    assert files_of(old) == {"table.csv": b"new\n", "mine.txt": b"a user's\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_run_left_aside_by_a_crash_is_put_back(tmp_path, pairs_file, tiny_bert_dir, capsys):
    """A crash between the two moves of the fallback replacement leaves the finished run at `.run.<x>.old`."""
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={tmp_path / 'run'}", *FAST]
    assert main(["ablate", *common]) == 0
    finished = files_of(tmp_path / "run")
    os.replace(tmp_path / "run", tmp_path / ".run.k2j4x.old")
    assert main(["attention", *common]) == 2     # any command into the folder puts it back first (then refuses)
    err = capsys.readouterr().err
    assert "put back from .run.k2j4x.old" in err and "holds a finished `ablate` run" in err
    assert files_of(tmp_path / "run") == finished and leftovers(tmp_path) == []


def test_a_full_disk_is_one_message_and_leaves_no_temporary_file(tmp_path, pairs_file, tiny_bert_dir, monkeypatch,
                                                                 capsys):
    import matplotlib.figure

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)   # the disk fills while drawing the map
    out = tmp_path / "run"
    assert main(["ablate", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={out}", *FAST]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.rglob("*.tmp"))
    # The conditions done are kept for resume=true, in the run's work folder.
    assert "resume=true" in err and list((tmp_path / ".run.partial" / "conditions").glob("L0H*.json"))


def test_a_read_only_output_folder_is_found_before_the_model_loads(tmp_path, pairs_file, tiny_bert_dir,
                                                                   monkeypatch, capsys):
    import experiments.evaluate as command
    from codesearch import files

    def read_only(path, *_args, **_kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(files, "atomic_write", read_only)
    monkeypatch.setattr(command, "encoder_for", must_not_run)
    assert main(["evaluate", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}",
                 f"output_dir={tmp_path / 'run'}", "progress=false"]) == 2
    assert "cannot write into" in capsys.readouterr().err
    assert leftovers(tmp_path) == [] and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 5. devices

@pytest.mark.parametrize("device", ["tpu", "meta", "cuda:x"])
def test_a_device_this_tool_does_not_run_on_is_refused_at_once(device, capsys):
    assert main(["evaluate", f"model.device={device}"]) == 2
    assert f"model.device='{device}': choose cpu, cuda, cuda:N or auto" in capsys.readouterr().err


# ---------------------------------------------------------------- 6. the umask

def test_result_files_follow_the_umask(tmp_path, pairs_file, tiny_bert_dir):
    previous = os.umask(0o027)
    try:
        assert main(["ablate", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}",
                     f"output_dir={tmp_path / 'run'}", *FAST]) == 0
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "run").iterdir()}
    assert modes["run.json"] == modes["importance.csv"] == modes["heatmap.png"] == 0o640
    assert modes["conditions"] == 0o750


# ---------------------------------------------------------------- 7. sweeps and shared folders

def test_a_sweep_over_heads_the_model_lacks_is_refused_before_its_first_run(tmp_path, pairs_file, tiny_bert_dir,
                                                                           capsys):
    from test_tracking_sweeps import write_sweep

    sweep = write_sweep(tmp_path / "grid.yaml", {"data.path": str(pairs_file), "model.name": str(tiny_bert_dir),
                                                 "ablation.layer": [0, 7], "ablation.head": [0]})
    assert main(["sweep", str(sweep), f"runs_dir={tmp_path}"]) == 2
    assert "layer 7 is out of range" in capsys.readouterr().err
    assert not list(tmp_path.glob("sweeps/grid-*/state.json")) and not list(tmp_path.glob("*/ablate"))


def test_two_runs_into_one_folder_are_refused(tmp_path, pairs_file, tiny_bert_dir, capsys):
    import fcntl

    work = tmp_path / ".run.partial"
    work.mkdir()
    holder = os.open(work, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)                 # another run holds the folder
    try:
        assert main(["evaluate", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}",
                     f"output_dir={tmp_path / 'run'}", "progress=false"]) == 2
        assert "another run is writing" in capsys.readouterr().err
        assert work.is_dir()                           # the other run's folder is left alone
    finally:
        os.close(holder)


# ---------------------------------------------------------------- 8. small things

def test_wandb_mode_from_the_environment_must_be_one_wandb_knows(monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    assert main(["evaluate", "data.path=nowhere.jsonl"]) == 2
    assert "WANDB_MODE='bogus' is no W&B mode" in capsys.readouterr().err


def test_settings_capped_by_the_data_say_so(tmp_path, pairs_file, tiny_bert_dir, capsys):
    assert main(["ablate", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={tmp_path / 'r'}",
                 "data.max_queries=50", "ablation.top_k=20", *FAST[:-1]]) == 0
    err = capsys.readouterr().err
    assert f"data.max_queries=50, but the data read ({pairs_file}) has 12 queries" in err   # pairs: no split
    assert "ablation.top_k=20, but the spec has 8 heads" in err


def test_file_errors_name_the_first_line_of_the_record(tmp_path):
    from codesearch.errors import DataError
    from codesearch.readers import iter_records

    bad_json = tmp_path / "a.jsonl"
    bad_json.write_text('{"query": "q", "code": "c"}\n{"query": "unterminated')
    with pytest.raises(DataError, match=r"a.jsonl:2: malformed JSON \(Unterminated string starting at: column 11\)"):
        list(iter_records(bad_json))
    latin = tmp_path / "b.jsonl"
    latin.write_bytes(b'{"query": "q", "code": "c"}\n{"query": "caf\xe9", "code": "c"}\n')
    with pytest.raises(DataError, match=r"b.jsonl:2: not UTF-8 text \(byte 0xe9, the line's byte 15"):
        list(iter_records(latin))
    table = tmp_path / "c.csv"
    table.write_text('query,code\n"two\nlines",x\nq,c,extra\n')
    with pytest.raises(DataError, match=r"c.csv:4: more values than the header has columns"):
        list(iter_records(table))
    latin_csv = tmp_path / "e.csv"   # streamed, and still the line of the bad byte
    latin_csv.write_bytes(b"query,code\n" + b"q,c\n" * 3000 + b"caf\xe9,c\n")
    with pytest.raises(DataError, match=r"e.csv:3002: not UTF-8 text \(byte 0xe9, the line's byte 4"):
        list(iter_records(latin_csv))


def test_a_small_memory_need_is_said_in_mebibytes(tiny_bert_dir):
    from ablation.conditions import build_conditions
    from ablation.engine import side_inputs
    from ablation.plan import Budget, plan_memory
    from codesearch.errors import UserError

    encoder = load_encoder(str(tiny_bert_dir))
    inputs = {"query": side_inputs(encoder, ["a query"] * 3, 32, 2), "code": side_inputs(encoder, ["code"] * 3, 48, 2)}
    with pytest.raises(UserError, match=r"ablation.max_memory_gb=1e-06 cannot hold .* at least \d+ MiB"):
        plan_memory(encoder, inputs, build_conditions("0.0", True, 2, 4), Budget(1024, "ablation.max_memory_gb=1e-06",
                                                                                   0))


def test_csv_rows_are_read_whole(tmp_path):
    from codesearch.readers import iter_records

    table = tmp_path / "d.csv"
    table.write_text('query,code\n"two\nlines",x\nq,c\n')
    assert [(where.rsplit(":", 1)[1], record["query"]) for where, record in iter_records(table)] == [
        ("2", "two\nlines"), ("4", "q")]
