"""The whole data_gen pipeline through the real openai client against a scripted server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from data_gen_rules import synth_rules
from scripted_openai_server import Call, Reply, ScriptedOpenAIServer

from data_gen.cli import main

REPO = Path(__file__).resolve().parent.parent
S = datasets.Value("string")
PREFERENCE = {"description": S, "dimension": S, "preference": S, "subdimension": S}
MESSAGES = datasets.List({"content": S, "role": S})
# The released Hugging Face schemas (kaist-ai/Multifaceted-Collection, -small, -DPO, -ORPO, -RM, Multifaceted-Bench).
RELEASED = {
    "sft": datasets.Features(
        {
            "main_source": S,
            "original_source": S,
            "preference_set": datasets.List(PREFERENCE),
            "system": S,
            "prompt": S,
            "output": S,
        }
    ),
    "dpo": datasets.Features(
        {"main_source": S, "original_source": S, "system": S, "prompt": S, "chosen": MESSAGES, "rejected": MESSAGES}
    ),
    "rm": datasets.Features({"input": S, "chosen": S, "rejected": S}),
    "bench": datasets.Features(
        {
            "source": S,
            "preference_set": datasets.List(PREFERENCE),
            "system": S,
            "prompt": S,
            "reference_answer": S,
            "rubrics": datasets.List({"criteria": S, "score_descriptions": {str(i): S for i in range(1, 6)}}),
        }
    ),
}
RELEASED["small"] = RELEASED["sft"]
RELEASED["orpo"] = RELEASED["dpo"]

MARKERS = [
    "",
    "[429]",
    "[500]",
    "[timeout]",
    "[trunc]",
    "[invalidbody]",
    "[empty]",
    "[disconnect]",
    "[badjson]",
    "[missingdim]",
    "[sysfail]",
    "[lastset]",
]
FAST = ["--timeout-s", "0.5", "--max-retries", "3", "--retry-backoff-s", "0.02", "--no-progress"]


def write_instructions(path: Path, markers: list[str]) -> list[dict]:
    rows = [
        {
            "id": f"ins-{i}",
            "prompt": f"Task {i}: explain topic number {i} carefully. {m}".strip(),
            "main_source": "unit",
            "original_source": f"origin-{i % 2}",
        }
        for i, m in enumerate(markers)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def run_cli(server: ScriptedOpenAIServer, src: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "run",
            "--instructions",
            str(src),
            "--out",
            str(out),
            "--model",
            "scripted",
            "--base-url",
            server.base_url,
            *FAST,
            *extra,
        ]
    )


def load_split(out: Path, name: str) -> datasets.Dataset:
    return datasets.load_dataset(str(out / "final" / name), split="train")


def final_snapshot(out: Path) -> dict[str, list]:
    return {p.parent.name: pq.read_table(p).to_pylist() for p in sorted((out / "final").glob("*/train.parquet"))}


def test_full_pipeline_with_faults_has_released_schemas_and_accounts_for_every_instruction(tmp_path):
    src = tmp_path / "instructions.jsonl"
    instructions = write_instructions(src, MARKERS)
    out = tmp_path / "out"
    with ScriptedOpenAIServer(synth_rules) as server:
        assert run_cli(server, src, out, "--stages", "all", "--max-concurrency", "16") == 0
        calls_first_run = server.call_count
        snapshot = final_snapshot(out)
        # Same command again: rows come from the stage files, rejected replies from the cache; only the
        # calls that failed at the API ([sysfail]: 3 system messages x 4 tries) are tried again.
        assert run_cli(server, src, out, "--stages", "all") == 0
        again = server.calls[calls_first_run:]
        assert len(again) == 12 and all("[sysfail]" in call.user for call in again)
        assert final_snapshot(out) == snapshot

    splits = {name: load_split(out, name) for name in RELEASED}
    for name, dataset in splits.items():
        assert dataset.features == RELEASED[name], name

    # Every instruction is in the SFT split or in failures.jsonl, and the counts add up.
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    sft_sets = Counter(row["prompt"] for row in splits["sft"])
    failed_sets = Counter(f["instruction_id"] for f in failures)
    for row in instructions:
        assert sft_sets[row["prompt"]] + failed_sets[row["id"]] == 3, row
    assert len(splits["sft"]) + len(failures) == 3 * len(instructions)
    reasons = {f["instruction_id"]: (f["stage"], f["reason"]) for f in failures}
    marker_of = {row["id"]: marker for row, marker in zip(instructions, MARKERS, strict=True)}
    expected = {
        "[badjson]": ("preference_sets", "invalid_reply: the reply is not valid JSON"),
        "[missingdim]": ("preference_sets", "invalid_reply: set 1 misses the dimension(s) harmlessness"),
        "[sysfail]": ("system_messages", "server_error: HTTP 503"),
        "[lastset]": ("responses", "empty_reply"),
    }
    assert {marker_of[i] for i in failed_sets} == set(expected)
    for iid, (stage, reason) in reasons.items():
        assert stage == expected[marker_of[iid]][0]
        assert reason.startswith(expected[marker_of[iid]][1]), reason
    assert failed_sets[next(i for i, m in marker_of.items() if m == "[lastset]")] == 1  # only set 3 failed

    # Intermediate rows never hold a rejected reply.
    stage_rows = [json.loads(line) for line in (out / "stages" / "preference_sets.jsonl").read_text().splitlines()]
    assert len(stage_rows) == len(instructions) - 2
    assert all(len(s) == 4 for row in stage_rows for s in row["preference_sets"])

    # Pair construction: chosen answers the row's own system message, rejected another one of the same prompt.
    output_of = {(r["system"], r["prompt"]): r["output"] for r in splits["sft"]}
    systems_of: dict[str, set] = {}
    for r in splits["sft"]:
        systems_of.setdefault(r["prompt"], set()).add(r["system"])
    assert len(splits["small"]) == len(splits["dpo"]) == len(splits["orpo"]) == len(splits["rm"]) == 9
    for pair, rm in zip(splits["dpo"], splits["rm"], strict=True):
        assert pair["chosen"] == [
            {"content": pair["prompt"], "role": "user"},
            {"content": output_of[(pair["system"], pair["prompt"])], "role": "assistant"},
        ]
        rejected = pair["rejected"][1]["content"]
        assert rejected in {output_of[(s, pair["prompt"])] for s in systems_of[pair["prompt"]] - {pair["system"]}}
        assert rm == {
            "input": pair["system"] + "\n" + pair["prompt"],
            "chosen": pair["chosen"][1]["content"],
            "rejected": rejected,
        }
    assert list(splits["dpo"]) == list(splits["orpo"])
    for row in splits["small"]:
        assert output_of[(row["system"], row["prompt"])] == row["output"]
    for row in splits["sft"]:
        assert [p["dimension"] for p in row["preference_set"]] == [
            "style",
            "background_knowledge",
            "informativeness",
            "harmlessness",
        ]
    assert len(splits["bench"]) == len(splits["sft"])
    for row in splits["bench"]:
        assert len(row["rubrics"]) == 4
        assert all(set(r["score_descriptions"]) == {"1", "2", "3", "4", "5"} for r in row["rubrics"])
        assert row["reference_answer"] == output_of[(row["system"], row["prompt"])]

    # Manifest and provenance: template versions, counts, hashes; provenance is row-aligned.
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["templates"]["preference_sets"]["version"] == 1
    assert manifest["set_counts"] == {"sets_expected": 36, "sets_in_sft": 26, "sets_failed": 10, "sets_not_run": 0}
    for name, info in manifest["splits"].items():
        provenance = (out / "final" / "provenance" / f"{name}.jsonl").read_text().splitlines()
        assert len(provenance) == info["rows"] == len(splits[name])
        assert "preference_sets@1" in json.loads(provenance[0])["templates"]


def test_bad_instruction_file_is_reported_with_line_numbers(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "prompt": "Summarize the water cycle."}),
                "{not json",
                json.dumps({"id": "b", "prompt": 42}),
                json.dumps({"id": "a", "prompt": "A different prompt with a reused id."}),
                json.dumps({"id": "c"}),
                json.dumps({"id": "d", "prompt": "You are a pirate. Tell me about ships."}),
                json.dumps({"id": "e", "prompt": "Summarize the water cycle."}),
                json.dumps({"id": "f", "messages": [{"role": "user", "content": "List three prime numbers."}]}),
            ]
        )
        + "\n"
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "run",
                "--instructions",
                str(src),
                "--out",
                str(out),
                "--model",
                "m",
                "--stages",
                "instructions",
                "--no-progress",
            ]
        )
        == 0
    )
    kept = [json.loads(line) for line in (out / "stages" / "instructions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in kept] == ["a", "f"]
    rejected = {
        r["origin"].rsplit(":", 1)[1]: r["reason"]
        for r in map(json.loads, (out / "stages" / "instructions.rejected.jsonl").read_text().splitlines())
    }
    assert rejected["2"].startswith("unreadable: line is not valid JSON")
    assert rejected["3"] == "invalid: field 'prompt' must be text, got int"
    assert rejected["4"].startswith("duplicate_id: id 'a' was already used at") and rejected["4"].endswith(":1")
    assert rejected["5"].startswith("invalid: no prompt")
    assert rejected["6"].startswith("persona")
    assert rejected["7"].startswith("duplicate: same prompt as instruction 'a'")
    counts = json.loads((out / "manifest.json").read_text())["instruction_counts"]
    assert counts["read"] == 8 == counts["kept"] + sum(v for k, v in counts.items() if k.startswith("rejected_"))


def test_dry_run_counts_calls_and_cost_without_calling(tmp_path, capsys):
    src = tmp_path / "instructions.jsonl"
    write_instructions(src, ["", "", ""])
    with ScriptedOpenAIServer(synth_rules) as server:
        assert (
            main(
                [
                    "run",
                    "--instructions",
                    str(src),
                    "--out",
                    str(tmp_path / "out"),
                    "--model",
                    "gpt-4-0125-preview",
                    "--base-url",
                    server.base_url,
                    "--stages",
                    "all",
                    "--dry-run",
                ]
            )
            == 0
        )
        assert server.call_count == 0
    printed = capsys.readouterr().out
    table = {line.split()[0]: line.split() for line in printed.splitlines() if line.split()}
    assert table["preference_sets"][1] == "3" and table["system_messages"][1] == "9"
    assert table["responses"][1] == "9" and table["rubrics"][1] == "36"
    assert "total: 57 calls, about $" in printed
    assert not (tmp_path / "out" / "stages").exists()


def test_stages_can_run_separately_and_limit_applies(tmp_path):
    src = tmp_path / "instructions.jsonl"
    write_instructions(src, ["", "", "", ""])
    out = tmp_path / "out"
    with ScriptedOpenAIServer(synth_rules) as server:
        assert run_cli(server, src, out, "--stages", "instructions,preference_sets", "--limit", "2") == 0
        assert server.call_count == 2
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["set_counts"]["sets_not_run"] == 6
        assert run_cli(server, src, out, "--stages", "system_messages,responses,splits") == 0
        assert server.call_count == 2 + 6 + 6
    assert len(load_split(out, "sft")) == 6
    assert not (out / "final" / "bench").exists()  # no rubrics stage, no bench split


def test_batch_api_path_gives_the_same_output_as_live_calls(tmp_path):
    src = tmp_path / "instructions.jsonl"
    write_instructions(src, ["", "", "[lastset]"])
    with ScriptedOpenAIServer(synth_rules) as live:
        assert run_cli(live, src, tmp_path / "live") == 0
    with ScriptedOpenAIServer(synth_rules, batch_polls_until_done=2) as server:
        assert run_cli(server, src, tmp_path / "batch", "--batch", "--batch-poll-s", "0.01") == 0
        assert server.requests["POST /v1/chat/completions"] == 0
        assert server.requests["POST /v1/batches"] >= 3  # one per stage, plus re-ask rounds
        assert all(call.via_batch for call in server.calls)
    assert final_snapshot(tmp_path / "batch") == final_snapshot(tmp_path / "live")
    failures = (tmp_path / "batch" / "failures.jsonl").read_text().splitlines()
    assert len(failures) == 1 and json.loads(failures[0])["reason"].startswith("empty_reply")


def test_killed_during_responses_resumes_without_repeated_calls(tmp_path):
    src = tmp_path / "instructions.jsonl"
    write_instructions(src, [""] * 6)  # 18 gold responses
    slow_after = threading.Event()
    answered = Counter()

    def rules(call: Call):
        reply = synth_rules(call)
        if call.system.startswith("You are a careful assistant"):  # a gold-response call
            answered["responses"] += 1
            if answered["responses"] >= 6:
                slow_after.set()
            return Reply(reply, delay_s=0.05)
        return reply

    with ScriptedOpenAIServer(synth_rules) as reference_server:
        assert run_cli(reference_server, src, tmp_path / "reference") == 0
    out = tmp_path / "out"
    with ScriptedOpenAIServer(rules) as server:
        command = [
            sys.executable,
            "-m",
            "data_gen",
            "run",
            "--instructions",
            str(src),
            "--out",
            str(out),
            "--model",
            "scripted",
            "--base-url",
            server.base_url,
            "--max-concurrency",
            "2",
            *FAST,
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert slow_after.wait(timeout=60), proc.stderr.read().decode() if proc.poll() is not None else ""
            time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        partial = out / "stages" / "responses.partial.jsonl"
        assert not (out / "stages" / "responses.jsonl").exists()
        answered_rows = {json.loads(line)["id"] for line in partial.read_text().splitlines() if line.strip()}
        assert 4 <= len(answered_rows) < 18
        first_run_calls = server.call_count
        first_run_response_calls = answered["responses"]

        assert run_cli(server, src, out) == 0
        second_run = server.calls[first_run_calls:]
    assert not partial.exists()  # folded into responses.jsonl at the end of the stage

    def row_of(call: Call) -> str:  # "ins-<i>/<k>" from the prompt and the system message
        return f"ins-{call.user.split(':')[0].split()[1]}/{call.system.split('for set ')[1][0]}"

    # Only gold responses are asked again, never one whose row was written before the kill; the only
    # repeats are the (at most 2) calls in flight when the process died.
    assert all(call.system.startswith("You are a careful assistant") for call in second_run)
    assert not {row_of(call) for call in second_run} & answered_rows
    repeated = [call for call in second_run if call.attempt > 0]
    assert len(repeated) <= 2
    assert 18 - len(answered_rows) - 2 <= len(second_run) <= 18 - len(answered_rows)
    assert first_run_response_calls + len(second_run) - len(repeated) == 18
    assert final_snapshot(out) == final_snapshot(tmp_path / "reference")


@pytest.mark.parametrize("source_kind", ["hf_dir", "parquet"])
def test_hf_datasets_and_parquet_sources(tmp_path, source_kind):
    rows = [
        {"prompt": "\n\nHuman: How do tides work?\n\nAssistant:", "source": ["anthropic-hh"]},
        {
            "prompt": "\n\nHuman: Name a red fruit.\n\nAssistant: An apple.\n\nHuman: Another?\n\nAssistant:",
            "source": ["sharegpt"],
        },
    ]
    folder = tmp_path / "Nectar"
    folder.mkdir()
    pq.write_table(datasets.Dataset.from_list(rows).data.table, folder / "train.parquet")
    source = f"hf:{folder}" if source_kind == "hf_dir" else str(folder / "train.parquet")
    out = tmp_path / "out"
    assert (
        main(
            [
                "run",
                "--instructions",
                source,
                "--out",
                str(out),
                "--model",
                "m",
                "--stages",
                "instructions",
                "--no-progress",
            ]
        )
        == 0
    )
    kept = [json.loads(line) for line in (out / "stages" / "instructions.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["original_source"]) for r in kept] == [
        ("How do tides work?", "anthropic-hh"),
        ("Name a red fruit.", "sharegpt"),
    ]
    assert {r["main_source"] for r in kept} == {"Nectar" if source_kind == "hf_dir" else "train"}
