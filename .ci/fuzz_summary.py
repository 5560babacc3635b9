"""One line of figures from a schemathesis NDJSON report (.ci/fuzz): test cases per phase and
generation mode, requests sent, failed checks. argv: backend label, report path, seconds."""

import json
import sys
from collections import Counter

label, path, seconds = sys.argv[1:]
cases: Counter[str] = Counter()
requests = failed = 0
with open(path, encoding="utf-8") as events:
    for line in events:
        event = json.loads(line)
        scenario = event.get("ScenarioFinished")
        if scenario is None:
            continue
        recorder = scenario["recorder"]
        requests += len(recorder.get("interactions", {}))
        failed += sum(
            c["status"] == "failure" for checks in recorder.get("checks", {}).values() for c in checks
        )
        for case in recorder.get("cases", {}).values():
            meta = case["value"].get("meta") or {}
            mode = (meta.get("generation") or {}).get("mode", "?")
            cases[f"{scenario['phase']}/{mode}"] += 1
phases = ", ".join(f"{key} {n}" for key, n in sorted(cases.items()))
print(
    f"fuzz summary ({label}): {sum(cases.values())} test cases ({phases}); "
    f"{requests} requests; {failed} failed checks; {seconds} s"
)
