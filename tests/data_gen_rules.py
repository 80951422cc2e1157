"""Scripted replies for every data_gen stage, so tests run the real pipeline against a local server.

Replies are pure functions of the request (so two runs give identical outputs). Markers in an
instruction's text inject faults into every call made for that instruction:

    [429] [500] [timeout] [trunc] [invalidbody] [empty] [disconnect]  first attempt fails, then it works
    [badjson]     the preference-set reply is never valid JSON          -> recorded failure
    [missingdim]  the preference sets always miss a dimension           -> recorded failure
    [sysfail]     system-message calls always answer 503 (Retry-After)  -> recorded failure after retries
    [lastset]     the response for the third preference set is always empty -> that set fails
"""

from __future__ import annotations

import hashlib
import json
import re

from scripted_openai_server import Call, Fault, Reply

DIMENSIONS = ("style", "background_knowledge", "informativeness", "harmlessness")
TRANSIENT = {
    "[429]": Fault.rate_limit(0.02),
    "[500]": Fault.server_error(),
    "[timeout]": Fault.hang(1.0),
    "[trunc]": Fault.truncated_json(),
    "[invalidbody]": Fault.invalid_json(),
    "[empty]": Fault.empty_content(),
    "[disconnect]": Fault.disconnect(),
}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def stage_of(call: Call) -> str:
    system = call.system
    if system.startswith("You anticipate how different people"):
        return "preference_sets"
    if system.startswith("You write system messages"):
        return "system_messages"
    if system.startswith("You are helpful and creative rubric generator"):
        return "rubrics"
    return "responses"


def instruction_text(call: Call) -> str:
    """The instruction a call is about (system messages and rubrics carry it inside the descriptions)."""
    if stage_of(call) == "preference_sets":
        return call.user.split("# Instruction\n", 1)[1].split("\n\n# Dimensions", 1)[0]
    return call.user + " " + call.system


def preference_sets_reply(instruction: str) -> dict:
    tag = digest(instruction)
    markers = " ".join(re.findall(r"\[\w+\]", instruction))  # carried into descriptions, so later stages see them
    return {
        "preference_sets": [
            [
                {
                    "dimension": d,
                    "subdimension": f"sub{k}",
                    "preference": f"pref {d} {k} {tag}",
                    "description": f"Set {k} wants {d} handled well for task {tag}. {markers}".strip(),
                }
                for d in DIMENSIONS
            ]
            for k in range(3)
        ]
    }


def synth_rules(call: Call) -> str | Reply | Fault:
    stage = stage_of(call)
    about = instruction_text(call)
    if call.attempt == 0:
        for marker, fault in TRANSIENT.items():
            if marker in about:
                return fault
    if stage == "preference_sets":
        if "[badjson]" in about:
            return "Sure! Here are the preference sets: style=vivid, background=expert"
        reply = preference_sets_reply(about)
        if "[missingdim]" in about:
            for preference_set in reply["preference_sets"]:
                preference_set.pop()
        return "```json\n" + json.dumps(reply) + "\n```"
    if stage == "system_messages":
        if "[sysfail]" in about:
            return Fault.status_code(503, retry_after=0.01, message="overloaded")
        set_number = re.search(r"Set (\d) wants", call.user)
        which = set_number.group(1) if set_number else "?"
        return f'"You are a careful assistant for set {which} ({digest(call.user)}). Follow these qualities."'
    if stage == "rubrics":
        return json.dumps(
            {
                "criteria": f"Does the response follow preference {digest(call.user)}?",
                "score_descriptions": {str(s): f"score {s} for {digest(call.user)}" for s in range(1, 6)},
            }
        )
    if "[lastset]" in about and "for set 2 " in call.system:
        return Reply("")
    return f"Gold answer {digest(call.system + call.user)} to: {call.user[:40]}"
