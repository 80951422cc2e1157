"""gs:// outputs of eval, data_gen and sweeps, and the start check of every CLI, against a real GCS emulator
(tests/gcs_emulator.py on 127.0.0.1) and the scripted OpenAI-compatible server (tests/scripted_openai_server.py)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from etils import epath
from scripted_openai_server import ScriptedOpenAIServer

pytest_plugins = ["gcs_fixtures"]  # gcs_emulator, gcs_env, gs_dir
REPO = Path(__file__).resolve().parents[1]
MISSING_BUCKET = "gs://no-such-bucket-janus"


def _names(url: str) -> list[str]:
    from gcs_fixtures import names

    return names(url)


def _json(url: str):
    return json.loads(epath.Path(url).read_text())


# ------------------------------------------------------------------------------------------ the path layer
def test_lines_appended_to_a_gs_object_are_composed_onto_it_and_a_background_flush_uploads_them(gs_dir):
    from janus_jax.paths import LineAppender, write_atomic

    log = f"{gs_dir}/log.jsonl"
    write_atomic(log, "a\nb")  # a killed writer's torn last line
    each = LineAppender(log)  # every write uploaded before it returns
    each.write("c\n")
    assert epath.Path(log).read_text() == "a\nb\nc\n"
    each.close()
    busy = LineAppender(log, flush_interval_s=0.1)
    busy.write("d\n")
    deadline = time.time() + 10
    while not epath.Path(log).read_text().endswith("d\n") and time.time() < deadline:
        time.sleep(0.05)  # uploaded by the background thread, without a further write or close
    assert epath.Path(log).read_text() == "a\nb\nc\nd\n"
    busy.write("e\n")
    busy.close()
    assert epath.Path(log).read_text() == "a\nb\nc\nd\ne\n"
    assert _names(gs_dir) == ["log.jsonl"]  # no upload part left beside it


def test_a_failed_background_upload_is_raised_by_the_next_write_and_its_lines_are_kept(gs_dir):
    from janus_jax.paths import LineAppender

    log = epath.Path(f"{gs_dir}/log.jsonl")
    busy = LineAppender(log, flush_interval_s=0.1)
    busy.write("a\n")
    deadline = time.time() + 10
    while not log.exists() and time.time() < deadline:
        time.sleep(0.05)
    log.unlink()  # the next compose has no object to append to: the upload fails
    busy.write("b\n")
    with pytest.raises(OSError, match=f"{log}: uploading appended lines failed"):
        while time.time() < deadline:
            busy.write("")  # raises once the background upload has failed
            time.sleep(0.05)
    log.write_text("a\n")
    busy.close()  # retries the lines the failed upload kept
    assert log.read_text() == "a\nb\n"


def test_a_gs_llm_cache_is_read_back_by_the_next_process_and_a_torn_entry_is_skipped(gs_dir, tmp_path,
                                                                                     monkeypatch):
    import tempfile

    from janus_jax.llm.cache import ResponseCache, request_key

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the local working copy is made
    url = f"{gs_dir}/cache/llm_cache.jsonl"
    first, second = request_key({"model": "m", "n": 1}), request_key({"model": "m", "n": 2})
    cache = ResponseCache(url)
    cache.put(first, {"text": "one"})
    assert cache.get(first)["text"] == "one"
    assert list(tmp_path.iterdir()) == []  # the copy is unlinked while open: a killed process leaves nothing
    cache.close()
    torn = epath.Path(url).read_bytes() + b'{"key": "' + second.encode() + b'", "te'  # as a kill mid-append
    epath.Path(url).write_bytes(torn)
    again = ResponseCache(url)
    assert again.get(first)["text"] == "one" and again.get(second) is None and again.skipped_lines == 1
    again.put(second, {"text": "two"})
    again.close()
    third = ResponseCache(url)
    assert (third.get(first)["text"], third.get(second)["text"]) == ("one", "two")  # the sealed torn entry lost
    third.close()


# ------------------------------------------------------------------------------------------ the start check
def test_a_writable_gs_folder_passes_the_start_check_and_keeps_no_probe(gs_dir):
    from janus_jax.paths import check_writable

    check_writable(gs_dir)
    check_writable("relative/local/dir")  # local paths are not probed
    assert not epath.Path(gs_dir).exists()


def _no_credentials(monkeypatch, tmp_path):
    """No emulator, no key file, no gcloud login, no metadata server (as on a laptop that never signed in)."""
    for key in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")


@pytest.mark.parametrize(
    ("case", "url", "message"),
    [
        ("missing bucket", f"{MISSING_BUCKET}/run", "the bucket does not exist"),
        ("unreachable", "gs://bkt/run", "the storage endpoint http://127.0.0.1:9 cannot be reached"),
        ("no credentials", "gs://bkt/run", "no Google Cloud credentials"),
    ],
)
def test_an_unwritable_gs_output_is_refused_in_seconds_naming_the_bucket(gcs_env, monkeypatch, tmp_path, case,
                                                                         url, message):
    from janus_jax.paths import StorageUnavailable, check_writable

    if case == "unreachable":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    if case == "no credentials":
        _no_credentials(monkeypatch, tmp_path)
    started = time.time()
    with pytest.raises(StorageUnavailable) as error:
        check_writable(url)
    assert f"cannot write to {url.split('/run')[0]} ({url})" in str(error.value) and message in str(error.value)
    assert time.time() - started < 15  # not gcsfs's half-minute of retries


@pytest.mark.parametrize("program", ["janus-train", "eval", "data_gen"])
def test_every_cli_refuses_an_unwritable_gs_output_before_any_work(gcs_env, tmp_path, capsys, program):
    from test_eval_end_to_end import multifaceted_args, write_bench

    from data_gen.cli import main as data_gen_main
    from eval.cli import main as eval_main
    from janus_jax.cli.train import main as train_main

    out = f"{MISSING_BUCKET}/{program}"
    with ScriptedOpenAIServer(lambda call: "never asked") as server:
        if program == "janus-train":
            code = train_main([f"--config={REPO / 'configs' / 'sft.py'}:tiny", f"--workdir={out}"])
        elif program == "eval":
            code = eval_main(multifaceted_args(server, write_bench(tmp_path), out))
        else:
            src = tmp_path / "instructions.jsonl"
            src.write_text(json.dumps({"id": "a", "prompt": "Explain tides."}) + "\n")
            code = data_gen_main(["run", "--instructions", str(src), "--out", out, "--model", "m",
                                  "--base-url", server.base_url, "--no-progress"])
        assert server.call_count == 0
    assert code == 2
    assert f"cannot write to {MISSING_BUCKET} ({out}): the bucket does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ eval
def test_an_eval_run_in_a_bucket_scores_resumes_rescores_and_compares_from_it(gs_dir):
    """--bench-file and --out on gs://; the same command again asks nothing; rescore and compare read gs:// runs."""
    from test_eval_end_to_end import Script, bench_rows, expected_multifaceted, multifaceted_args

    from eval.cli import main as eval_main
    from janus_jax.jsonio import write_jsonl_atomic

    bench, run = f"{gs_dir}/bench.jsonl", f"{gs_dir}/run"
    write_jsonl_atomic(bench, bench_rows())
    script = Script(bench_rows())
    with ScriptedOpenAIServer(script) as server:
        assert eval_main(multifaceted_args(server, bench, run)) == 0
        calls = server.call_count
        assert eval_main(multifaceted_args(server, bench, run)) == 0
        assert server.call_count == calls  # answers and judgments read back from the bucket
    scores = _json(f"{run}/scores.json")
    assert scores["overall"]["value"] == pytest.approx(expected_multifaceted()["overall"])
    assert scores["problems"]["bad_bench_rows"] == ["3: no rubrics (neither 'rubrics' nor 'rubric')"]
    expected = {"run.json", "items.jsonl", "responses.jsonl", "judgments.jsonl", "scores.json", "report.md",
                "scores_by_benchmark.png", "cache"}
    assert expected <= set(_names(run)), _names(run)
    assert _names(f"{run}/cache") == ["generation.jsonl", "judge.jsonl"]
    assert epath.Path(f"{run}/scores_by_benchmark.png").read_bytes().startswith(b"\x89PNG")

    assert eval_main(["rescore", run]) == 0
    assert _json(f"{run}/scores.json")["overall"] == scores["overall"]
    assert eval_main(["compare", run, "--out", f"{gs_dir}/compare"]) == 0
    assert f"{scores['overall']['value']:.2f}" in epath.Path(f"{gs_dir}/compare/report.md").read_text()


def test_best_of_n_refuses_a_gs_output_before_sampling(gs_dir):
    """Its samples are written by janus-best-of-n to local files; pathlib would make gs://B a local gs:/B."""
    from eval.benches.common import RunSettings
    from eval.best_of_n import BestOfN, run_best_of_n
    from eval.runner import JudgeSpec

    spec = BestOfN("no-policy", "no-rm", 2)
    with pytest.raises(ValueError, match=f"{gs_dir}/bo is not local: use a local --out"):
        run_best_of_n("multifaceted", f"{gs_dir}/bo", spec, JudgeSpec("judge"), RunSettings())
    assert not Path("gs:").exists()


@pytest.mark.slow  # waits out the upload interval of the busy logs before the kill
def test_an_eval_run_killed_in_a_bucket_resumes_without_repeating_uploaded_judge_calls(gs_dir, gcs_env, tmp_path):
    from test_eval_end_to_end import Script, bench_rows, expected_multifaceted, multifaceted_args

    from eval.cli import main as eval_main
    from janus_jax.jsonio import write_jsonl_atomic
    from janus_jax.paths import BUSY_LOG_FLUSH_S

    bench, run = f"{gs_dir}/bench.jsonl", f"{gs_dir}/run"
    write_jsonl_atomic(bench, bench_rows())
    reference = Script(bench_rows())
    with ScriptedOpenAIServer(reference) as server:
        assert eval_main(multifaceted_args(server, bench, f"{gs_dir}/reference")) == 0
    script = Script(bench_rows())
    script.hang_after = 8  # answer 8 judge calls, then leave every further call hanging
    with ScriptedOpenAIServer(script) as server:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "eval", *multifaceted_args(server, bench, run)], cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while script.judge_calls <= 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(BUSY_LOG_FLUSH_S + 2)  # the 8 answers reach the cache object in the bucket
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not epath.Path(f"{run}/scores.json").exists()
        script.hang_after = None
        script.judge_calls = 0
        assert eval_main(multifaceted_args(server, bench, run)) == 0
        assert 8 + script.judge_calls == reference.judge_calls - script.reask_skipped
    assert _json(f"{run}/scores.json")["overall"]["value"] == pytest.approx(expected_multifaceted()["overall"])


# ------------------------------------------------------------------------------------------ data_gen
def test_data_gen_into_a_bucket_writes_what_a_local_run_writes_and_resumes_from_it(tmp_path, gs_dir):
    """Instructions read from gs://; stage files, cache, failures, Parquet splits and manifest written there,
    byte for byte what the same run writes locally; the same command again makes no call."""
    from data_gen_rules import synth_rules
    from test_data_gen_pipeline import final_snapshot, run_cli, write_instructions

    from janus_jax.jsonio import read_jsonl, read_parquet

    markers = ["", "[lastset]"]
    local_src, gs_src = tmp_path / "instructions.jsonl", epath.Path(f"{gs_dir}/instructions.jsonl")
    write_instructions(local_src, markers)
    write_instructions(gs_src, markers)
    local, out = tmp_path / "out", f"{gs_dir}/out"
    with ScriptedOpenAIServer(synth_rules) as server:
        assert run_cli(server, local_src, local, "--stages", "all") == 0
        assert run_cli(server, gs_src, out, "--stages", "all") == 0
        calls = server.call_count
        assert run_cli(server, gs_src, out, "--stages", "all") == 0
        assert server.call_count == calls  # every row read back from the bucket

    splits = final_snapshot(local)
    assert set(splits) == {"sft", "small", "dpo", "orpo", "rm", "bench"}
    for name, rows in splits.items():
        assert read_parquet(f"{out}/final/{name}/train.parquet") == rows, name
    manifest, local_manifest = _json(f"{out}/manifest.json"), json.loads((local / "manifest.json").read_text())
    assert manifest["splits"] == local_manifest["splits"]  # same Parquet bytes (sha256)
    for name in ("preference_sets", "system_messages", "responses", "rubrics"):  # instructions name their source
        assert manifest["stage_files"][name] == local_manifest["stage_files"][name], name
    (failure,) = read_jsonl(f"{out}/failures.jsonl")
    assert failure["stage"] == "responses" and failure["origin"] == f"{gs_src}:2"
    assert {**failure, "origin": None} == {**read_jsonl(local / "failures.jsonl")[0], "origin": None}
    assert _names(f"{out}/cache") == ["llm_cache.jsonl"]
    assert len(read_jsonl(f"{out}/cache/llm_cache.jsonl")) == len(read_jsonl(local / "cache" / "llm_cache.jsonl"))
    assert not any(name.endswith(".partial.jsonl") for name in _names(f"{out}/stages"))


def test_data_gen_batch_mode_into_a_bucket_keeps_its_batch_state_there_and_writes_what_live_calls_write(
        tmp_path, gs_dir):
    """`--batch --out gs://...`: the Batch API's input files and states (batch ids) are in OUT/batches in the
    bucket, every answer came through a batch, and the splits are those of live calls."""
    from data_gen_rules import synth_rules
    from test_data_gen_pipeline import final_snapshot, run_cli, write_instructions

    from janus_jax.jsonio import read_parquet

    src = tmp_path / "instructions.jsonl"
    write_instructions(src, ["", "[lastset]"])
    with ScriptedOpenAIServer(synth_rules) as live:
        assert run_cli(live, src, tmp_path / "live") == 0
    out = f"{gs_dir}/out"
    with ScriptedOpenAIServer(synth_rules, batch_polls_until_done=2) as server:
        assert run_cli(server, src, out, "--batch", "--batch-poll-s", "0.01") == 0
        assert server.requests["POST /v1/chat/completions"] == 0 and all(c.via_batch for c in server.calls)
        batches = server.requests["POST /v1/batches"]
    states = [name for name in _names(f"{out}/batches") if not name.endswith(".input.jsonl")]
    assert len(states) == batches >= 3  # one per stage, plus re-ask rounds
    assert all(_json(f"{out}/batches/{name}")["merged"] for name in states)
    for name, rows in final_snapshot(tmp_path / "live").items():
        assert read_parquet(f"{out}/final/{name}/train.parquet") == rows, name


@pytest.mark.slow  # slow replies, so that the kill comes after an upload of the partial stage file
def test_data_gen_killed_in_a_bucket_resumes_without_asking_again_for_uploaded_rows(tmp_path, gs_dir, gcs_env):
    from data_gen_rules import synth_rules
    from scripted_openai_server import Reply
    from test_data_gen_pipeline import FAST, final_snapshot, run_cli, write_instructions

    from janus_jax.jsonio import read_jsonl, read_parquet

    src = tmp_path / "instructions.jsonl"
    write_instructions(src, [""] * 6)  # 18 gold responses

    def slow_responses(call):
        reply = synth_rules(call)
        return Reply(reply, delay_s=0.4) if call.system.startswith("You are a careful assistant") else reply

    with ScriptedOpenAIServer(synth_rules) as reference_server:
        assert run_cli(reference_server, src, tmp_path / "reference") == 0
    out = f"{gs_dir}/out"
    partial = epath.Path(f"{out}/stages/responses.partial.jsonl")
    with ScriptedOpenAIServer(slow_responses) as server:
        command = [sys.executable, "-m", "data_gen", "run", "--instructions", str(src), "--out", out, "--model",
                   "scripted", "--base-url", server.base_url, "--max-concurrency", "1", *FAST]
        proc = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not epath.Path(f"{out}/stages/responses.jsonl").exists()
        uploaded = {row["id"] for row in read_jsonl(partial, skip_bad_lines=True)}
        assert 1 <= len(uploaded) < 18
        first_run_calls = server.call_count
        assert run_cli(server, src, out) == 0
        second_run = server.calls[first_run_calls:]

    def row_of(call) -> str:  # "ins-<i>/<k>" from the prompt and the system message
        return f"ins-{call.user.split(':')[0].split()[1]}/{call.system.split('for set ')[1][0]}"

    assert all(call.system.startswith("You are a careful assistant") for call in second_run)
    assert not {row_of(call) for call in second_run} & uploaded  # rows in the bucket are never asked again
    assert len(second_run) <= 18 - len(uploaded)
    assert not partial.exists()
    for name, rows in final_snapshot(tmp_path / "reference").items():
        assert read_parquet(f"{out}/final/{name}/train.parquet") == rows, name


# ------------------------------------------------------------------------------------------ sweeps
TOY_CONFIG = """
import ml_collections


def get_config(preset="tiny"):
    return ml_collections.ConfigDict({"optimizer": {"lr": 1e-3}, "steps": 3})
"""


def test_a_sweep_in_a_bucket_keeps_its_record_there_and_collect_tables_its_gs_workdirs(tmp_path, gs_dir, capsys):
    """run_sweep with gs:// workdirs (each point writes what janus-train leaves: a manifest and metrics lines),
    then `python -m launch collect gs://...` reads them into results.md / .csv / .png in the bucket."""
    import ml_collections

    from janus_jax.jsonio import Appender
    from janus_jax.manifest import finish_manifest, write_manifest
    from launch.cli import main as launch_main
    from launch.sweep import load_sweep, run_sweep

    (tmp_path / "toy.py").write_text(TOY_CONFIG)
    sweep_file = tmp_path / "lr_sweep.py"
    sweep_file.write_text(textwrap.dedent(f"""
        def get_sweep():
            return {{"base": "{tmp_path / 'toy.py'}:tiny", "grid": {{"optimizer.lr": [0.1, 0.2]}}}}
    """))

    def train_point(argv, workdir, name):
        lr = float(argv[-1].split("=")[1])
        write_manifest(workdir, config=ml_collections.ConfigDict({"optimizer": {"lr": lr}, "steps": 3}))
        metrics = Appender(workdir / "metrics.jsonl")
        for step in (1, 2, 3):
            metrics.write({"step": step, "loss": lr * 10 / step})
        metrics.close()
        finish_manifest(workdir, "completed")
        return 0

    sweep_dir = f"{gs_dir}/sweep"
    assert run_sweep(load_sweep(sweep_file), sweep_dir=sweep_dir, launch_point=train_point, target="local") == 0
    record = _json(f"{sweep_dir}/sweep.json")
    assert [p["workdir"] for p in record["points"]] == [f"{sweep_dir}/00-lr=0.1", f"{sweep_dir}/01-lr=0.2"]
    assert [p["status"] for p in record["points"]] == ["completed", "completed"]
    metrics = epath.Path(f"{sweep_dir}/01-lr=0.2/metrics.jsonl")
    metrics.write_bytes(metrics.read_bytes() + b'{"step": 4, "lo')  # a torn line: counted, never dropped silently

    assert launch_main(["collect", sweep_dir]) == 0
    out, err = capsys.readouterr()
    assert "1 unreadable input(s)" in err and "01-lr=0.2/metrics.jsonl:4: not JSON" in err
    rows = [line.split(" | ") for line in out.splitlines()[2:]]
    assert [(r[0].strip("| "), r[2], r[3], r[4]) for r in rows] == [
        ("00-lr=0.1", "completed", "3", "0.333333"), ("01-lr=0.2", "completed", "3", "0.666667")]
    assert {"results.md", "results.csv", "results.png"} <= set(_names(sweep_dir))
    assert epath.Path(f"{sweep_dir}/results.md").read_text() == out
    csv_rows = epath.Path(f"{sweep_dir}/results.csv").read_text().splitlines()
    assert csv_rows[0].startswith("point,optimizer.lr,status") and csv_rows[2].endswith(",1")


POINT_PROGRAM = """
import json, sys
from janus_jax.jsonio import Appender
from janus_jax.paths import to_path, write_atomic

flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
print("training into", flags["workdir"], flush=True)
metrics = Appender(to_path(flags["workdir"]) / "metrics.jsonl")
metrics.write({"step": 1, "loss": float(flags["config.optimizer.lr"])})
metrics.close()
write_atomic(to_path(flags["workdir"]) / "manifest.json", json.dumps({"status": "completed"}))
"""


def test_launch_sweep_from_the_command_line_into_a_bucket_keeps_the_process_logs_local(tmp_path, gs_dir,
                                                                                         monkeypatch):
    """`python -m launch sweep FILE --target local --sweep-dir gs://...`: every point's workdir is its gs:// URL
    (not a local `gs:/` folder), the process logs go to runs/launch-logs/POINT, and a rerun skips the points
    whose manifests in the bucket say they completed."""
    from launch.cli import main as launch_main

    (tmp_path / "toy.py").write_text(TOY_CONFIG)
    sweep_file = tmp_path / "lr_sweep.py"
    sweep_file.write_text(textwrap.dedent(f"""
        def get_sweep():
            return {{"base": "{tmp_path / 'toy.py'}:tiny", "grid": {{"optimizer.lr": [0.1, 0.2]}}}}
    """))
    (tmp_path / "point.py").write_text(POINT_PROGRAM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    sweep_dir = f"{gs_dir}/sweep"
    command = ["sweep", str(sweep_file), "--target", "local", "--sweep-dir", sweep_dir, "--",
               sys.executable, str(tmp_path / "point.py")]
    assert launch_main(command) == 0

    record = _json(f"{sweep_dir}/sweep.json")
    points = ["00-lr=0.1", "01-lr=0.2"]
    assert [(p["workdir"], p["status"]) for p in record["points"]] == [(f"{sweep_dir}/{p}", "completed")
                                                                      for p in points]
    assert epath.Path(f"{sweep_dir}/01-lr=0.2/metrics.jsonl").read_text() == '{"step": 1, "loss": 0.2}\n'
    for point in points:
        log = tmp_path / "runs" / "launch-logs" / point / "process_0.log"
        assert log.read_text().splitlines()[0] == f"training into {sweep_dir}/{point}"  # then gcsfs's warnings
    assert not (tmp_path / "gs:").exists()

    assert launch_main(command) == 0  # the manifests in the bucket say both completed: nothing runs again
    assert [p["status"] for p in _json(f"{sweep_dir}/sweep.json")["points"]] == ["completed (earlier run)"] * 2


# ------------------------------------------------------------------------------------------ training data
def test_training_data_on_gs_reads_as_the_same_local_files_do(tmp_path, gs_dir):
    """`config.data.source` as a gs:// JSONL file (a bad line reported with its place), Parquet file or folder
    of shards; a gs:// source that does not exist is an error, never taken for a hub dataset name."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from train_helpers import write_sft_rows

    from janus_jax.data.report import DataReport
    from janus_jax.data.sources import load_rows

    local = write_sft_rows(tmp_path / "sft.jsonl", n_instructions=2)
    lines = local.read_text().splitlines(keepends=True)
    text = "".join(lines[:2]) + "{not json\n" + "".join(lines[2:])
    parquet = tmp_path / "sft.parquet"
    pq.write_table(pa.Table.from_pylist([json.loads(line) for line in lines]), parquet)
    epath.Path(f"{gs_dir}/sft.jsonl").write_text(text)
    epath.Path(f"{gs_dir}/sft.parquet").write_bytes(parquet.read_bytes())
    for shard, part in (("a.jsonl", lines[:3]), ("b.jsonl", lines[3:])):
        epath.Path(f"{gs_dir}/shards/{shard}").write_text("".join(part))

    def rows(source: str) -> tuple[list, list]:
        report = DataReport(source=source)
        return load_rows(source, "train", report, "train"), [(i.row, i.detail) for i in report.issues]

    want = [json.loads(line) for line in lines]
    loaded, issues = rows(f"{gs_dir}/sft.jsonl")
    assert loaded == want[:2] + [None] + want[2:]
    assert [(row, detail.split(":")[0]) for row, detail in issues] == [(2, "sft.jsonl line 3")]
    assert rows(f"{gs_dir}/sft.parquet") == (want, [])
    assert rows(f"{gs_dir}/shards") == (want, [])
    with pytest.raises(FileNotFoundError, match=f"data source {gs_dir}/nothing.jsonl does not exist"):
        rows(f"{gs_dir}/nothing.jsonl")


def test_a_run_on_gs_data_records_its_sources_in_the_manifest(tmp_path, gs_dir):
    """janus-train's data setup names a gs:// training set and a local eval folder among the run's data files
    (the manifest hashes the local one and records the URL as not local), instead of leaving both out."""
    from train_helpers import tiny_sft_config, write_sft_rows

    from janus_jax.manifest import write_manifest
    from janus_jax.objectives import REGISTRY
    from janus_jax.train import data_setup
    from janus_jax.train.run import model_config

    local = write_sft_rows(tmp_path / "sft.jsonl", n_instructions=4)
    epath.Path(f"{gs_dir}/sft.jsonl").write_text(local.read_text())
    (tmp_path / "heldout").mkdir()
    write_sft_rows(tmp_path / "heldout" / "part-0.jsonl", n_instructions=1, seed=1)
    cfg = tiny_sft_config(f"{gs_dir}/sft.jsonl", **{"data.eval_source": str(tmp_path / "heldout")})

    data = data_setup.build(cfg, model_config(cfg), REGISTRY[cfg.objective])
    assert data.files == [f"{gs_dir}/sft.jsonl", str(tmp_path / "heldout")]
    recorded = write_manifest(tmp_path / "run", config=cfg, data_files=data.files)["data_files"]
    assert [(r["path"], r["kind"]) for r in recorded] == [(f"{gs_dir}/sft.jsonl", "not_local"),
                                                          (str(tmp_path / "heldout"), "directory")]
    assert recorded[1]["files"] == 1 and len(recorded[1]["sha256"]) == 64


def test_the_loss_plot_of_a_run_in_a_bucket_is_written_there(gs_dir):
    from janus_jax.train.metrics import plot_loss

    rows = [{"step": s, "loss": 3.0 / s} for s in (1, 2, 3)] + [{"step": 3, "eval/loss": 1.5}]
    epath.Path(f"{gs_dir}/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert str(plot_loss(gs_dir)) == f"{gs_dir}/loss.png"
    assert epath.Path(f"{gs_dir}/loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
