"""RealToxicityPrompts: the generation protocol through the real client, dist-n, the Perspective client on a
local HTTP server, and toxicity reported as unavailable (not faked) when no scorer is configured."""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scripted_openai_server import Call, ScriptedOpenAIServer  # noqa: E402

from eval.benches.common import RunSettings  # noqa: E402
from eval.benches.rtp import BENCHMARK, PerspectiveScorer, distinct_n, toxicity_summary  # noqa: E402
from eval.cli import main as eval_main  # noqa: E402

pytest_plugins = ["tiny_checkpoints"]  # tiny_checkpoint, random_checkpoint


def test_distinct_n():
    texts = ["a b c a b", "a b d"]
    # bigrams: ab bc ca ab | ab bd -> 6 total, unique {ab, bc, ca, bd} = 4
    assert distinct_n(texts, 2) == pytest.approx(4 / 6)
    assert distinct_n(["one"], 2) != distinct_n(["one"], 2)  # NaN: no bigram at all


def test_toxicity_summary_and_unavailable():
    summary = toxicity_summary([[0.1, 0.7, None], [0.2, 0.3], [None]])
    assert summary["avg_max_toxicity"] == pytest.approx((0.7 + 0.3) / 2)
    assert summary["toxic_prob"] == pytest.approx(0.5)
    assert summary["unscored_samples"] == 2
    snapshots = [{"id": "p", "cluster": "p", "prompt": "prompt"}, {"id": "q", "cluster": "q", "prompt": "other"}]
    responses = {"p": {"id": "p", "answers": [["x y z", "x y"]], "error": None}}
    result = BENCHMARK.aggregate(snapshots, [], RunSettings(), responses=responses)
    assert result["toxicity"] == {"available": False, "reason": "no toxicity scorer configured (--toxicity)"}
    assert result["output_ppl"]["available"] is False
    assert result["problems"]["no_generation"] == ["q"]


class _Perspective(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert "key=secret-key" in self.path
        text = body["comment"]["text"]
        if "unratable" in text:
            self.send_response(400)
            self.end_headers()
            return
        value = 0.9 if "toxic" in text else 0.1
        payload = json.dumps({"attributeScores": {"TOXICITY": {"summaryScore": {"value": value}}}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_rtp_generation_protocol_and_perspective_scores(tmp_path, monkeypatch):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Perspective)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "secret-key")

    def rules(call: Call):
        return "a toxic reply here" if "fart" in call.user else "a calm and kind reply"

    try:
        with ScriptedOpenAIServer(rules) as server:
            assert (
                eval_main(
                    [
                        "run",
                        "rtp",
                        "--model",
                        "policy",
                        "--base-url",
                        server.base_url,
                        "--out",
                        str(tmp_path),
                        "--limit",
                        "3",
                        "--toxicity",
                        "perspective",
                        "--perspective-url",
                        f"http://127.0.0.1:{httpd.server_address[1]}/analyze",
                        "--quiet",
                    ]
                )
                == 0
            )
            bodies = [c.body for c in server.calls]
        scorer = PerspectiveScorer(url=f"http://127.0.0.1:{httpd.server_address[1]}/analyze")
        assert scorer.score("unratable") is None  # a refused request is unscored, never a made-up value
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(bodies) == 3
    assert all(b["n"] == 25 and b["max_tokens"] == 20 and b["top_p"] == 0.9 and b["temperature"] == 1.0 for b in bodies)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["samples_per_prompt"] == 25
    assert scores["toxicity"]["available"] and scores["toxicity"]["scorer"] == "perspective"
    # The first shipped toxic prompt mentions "fart": its samples are rated 0.9, the others 0.1.
    assert scores["toxicity"]["avg_max_toxicity"] == pytest.approx((0.9 + 0.1 + 0.1) / 3)
    assert scores["toxicity"]["toxic_prob"] == pytest.approx(1 / 3)
    assert "secret-key" not in (tmp_path / "scores.json").read_text()


def test_output_perplexity_under_a_local_model(tmp_path):
    """Perplexity of the continuation only, given the prompt, from a tiny local HF model; checked against
    the model's own loss with the prompt positions masked out."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from eval.benches.rtp import perplexities

    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "<unk>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(tmp_path)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(
        tmp_path)
    got = perplexities(str(tmp_path), ["the cat sat"], ["on a mat"])[0]
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    ids = torch.tensor([[words.index(w) for w in ["the", "cat", "sat", "on", "a", "mat"]]])
    labels = ids.clone()
    labels[0, :3] = -100
    with torch.no_grad():
        want = torch.exp(model(ids, labels=labels).loss).item()
    assert got == pytest.approx(want, rel=1e-5)


# 40 s on 2 cores (a janus-serve and its programs): make test-all. make test keeps its parts: the restart with
# --max-n in test_eval_serve_process.py, eval --checkpoint in test_chain.py, the RTP protocol above.
@pytest.mark.slow
def test_eval_run_rtp_on_a_checkpoint_gets_its_25_samples_and_a_rerun_serves_nothing(random_checkpoint, tmp_path,
                                                                                     capfd, monkeypatch):
    """`eval run rtp --checkpoint DIR`: janus-serve is started admitting RealToxicityPrompts' 25 samples a call
    (above its default --max-n of 16), run.json names the checkpoint, and a rerun with every answer stored starts
    no server."""
    from tiny_checkpoints import served

    monkeypatch.delenv("JANUS_SERVE_API_KEY", raising=False)
    command = ["run", "rtp", "--checkpoint", str(random_checkpoint), "--out", str(tmp_path), "--limit", "2", "--quiet"]
    assert eval_main(command) == 0
    printed = capfd.readouterr()
    assert served(printed.out + printed.err) == (1, 2)
    responses = [json.loads(line) for line in (tmp_path / "responses.jsonl").open()]
    assert [(len(r["answers"][0]), r["sampling"]["n"], r["error"]) for r in responses] == [(25, 25, None)] * 2
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["samples_per_prompt"] == 25 and 0 < scores["dist-2"] <= 1
    run_info = json.loads((tmp_path / "run.json").read_text())
    assert (run_info["model"], run_info["checkpoint"], run_info["model_base_url"]) == (
        "tiny-random", str(random_checkpoint), None)

    assert eval_main(command) == 0
    assert served("".join(capfd.readouterr())) == (0, 0)
