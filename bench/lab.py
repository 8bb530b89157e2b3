"""Labs (issue 17's numbers), in one run from cached images, everything in a namespace of the bench's:

1. a raw appliance boot (a nestor VM's QEMU argv from its launch.json, run with subprocess.Popen,
   to the boot line; bench/nested_api.py's raw_boots), `--raw-runs` times;
2. the depth-2 quickstart (`nestor quickstart -o json`, its steps' total without the teardown);
3. `lab up examples/labs/two-hypervisors.yaml` (the CLI's wall time), then until both L2s have
   pinged the other L1 (the quickstart waits for its l2's ping too: the like-for-like number);
4. `lab up` again (zero changes) and `lab plan` (nothing to do), `--repeats` times each;
5. `lab save`, `lab restore` (the lab's status must show every VM running after it), `lab down`.

Goals: lab up ≤ 1.5× quickstart; up again ≤ 1 s; plan ≤ 0.5 s; restore ≤ 0.5× up; quickstart
≤ 5× the raw boot. The load average is sampled all along (the machine is shared).
Everything is torn down in `finally`, VMs reaped by pid.

Run: .venv/bin/python bench/lab.py [--raw-runs 5] [--repeats 5]
Writes bench/results/lab.json; docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, LoadSampler, nestor_timed, new_netns, reap, record, scratch_home, summary
from nested_api import raw_boots

LAB = ROOT / "examples" / "labs" / "two-hypervisors.yaml"
NAME = "twohv"
PINGS = {"hv1": ("web1", "web1-ping: "), "hv2": ("web2", "web2-ping: ")}
PING_TIMEOUT = 600.0


def quickstart_netns(home: Path) -> str | None:
    """The namespace today's quickstart makes for a home of its own (None if it no longer does)."""
    try:
        from nestor.quickstart import netns_for
    except ImportError:
        return None
    return netns_for(home)


def wait_pings(home: Path, ns: str) -> dict[str, object]:
    """Each L2's ping line (through its L1's nestor), and the moment both were seen."""
    from nestor.lab.levels import Levels

    seen: dict[str, object] = {}
    for l1, (l2, marker) in PINGS.items():
        with Levels(home, ns).open(l1) as hv:
            for _ in hv.vm_log(l2, until=marker, timeout=PING_TIMEOUT):
                pass
            tail = b"".join(hv.vm_log(l2, tail=4096)).decode(errors="replace")
        line = next((x for x in reversed(tail.splitlines()) if marker in x), "")
        seen[f"{l1}/{l2}"] = line.strip()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw-runs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="runs of `lab up` again and of `lab plan`")
    args = parser.parse_args()
    os.environ["NESTOR_DEFAULT_SWITCH"] = "none"  # no default network anywhere: every switch is in ns
    home = scratch_home()
    ns = new_netns("nblab")
    namespaces = [ns, *filter(None, [quickstart_netns(home)])]
    data: dict[str, object] = {"lab_file": str(LAB.relative_to(ROOT))}
    lab_made = False
    failure: str | None = None
    try:
        with LoadSampler() as load:
            try:
                load.mark("images")
                # the images (and the payload) once, outside the timed runs
                nestor_timed(home, "image", "build", "nested-host", timeout=3600)

                load.mark("raw boot")
                raw = raw_boots(home, args.raw_runs)
                raw_median = statistics.median(raw)
                data["raw_appliance_boot_s"] = summary(raw)

                load.mark("quickstart")
                wall, result = nestor_timed(home, "quickstart", "-o", "json", netns=ns)
                qs = json.loads(result.stdout)
                steps = {s["step"]: s["seconds"] for s in qs["steps"]}
                qs_total = sum(seconds for step, seconds in steps.items() if step != "teardown")
                data.update(quickstart_steps_s=steps, quickstart_total_s=round(qs_total, 2),
                            quickstart_wall_s=round(wall, 2))

                load.mark("lab up")
                lab_made = True
                start = time.monotonic()
                up_wall, result = nestor_timed(home, "lab", "up", str(LAB), "-o", "json", netns=ns)
                up = json.loads(result.stdout)
                assert up["failed"] == [], up
                pings = wait_pings(home, ns)
                ready = time.monotonic() - start
                data.update(lab_up_s=round(up_wall, 2), lab_up_changes=up["changes"],
                            lab_up_to_both_pings_s=round(ready, 2), pings=pings,
                            lab_up_progress=result.stderr.splitlines()[-40:])

                load.mark("lab up again")
                again = []
                for _ in range(args.repeats):
                    wall, result = nestor_timed(home, "lab", "up", str(LAB), "-o", "json", netns=ns)
                    assert json.loads(result.stdout)["changes"] == 0, result.stdout
                    again.append(wall)
                data["lab_up_again_s"] = summary(again)

                load.mark("lab plan")
                plans = []
                for _ in range(args.repeats):
                    wall, result = nestor_timed(home, "lab", "plan", str(LAB), "-o", "json", netns=ns)
                    counts = json.loads(result.stdout)["counts"]
                    assert all(v == 0 for k, v in counts.items() if k != "keep"), counts
                    plans.append(wall)
                data["lab_plan_s"] = summary(plans)

                load.mark("lab save")
                save_wall, result = nestor_timed(home, "lab", "save", NAME, "-o", "json")
                data.update(lab_save_s=round(save_wall, 2),
                            saved=[s["path"] for s in json.loads(result.stdout)["saved"]])

                load.mark("lab restore")
                restore_wall, result = nestor_timed(home, "lab", "restore", NAME, "-o", "json")
                restored = json.loads(result.stdout)
                assert restored["failed"] == [], restored
                _, result = nestor_timed(home, "lab", "status", NAME, "-o", "json")
                states = {vm["path"]: vm["state"] for lvl in json.loads(result.stdout)["levels"] for vm in lvl["vms"]}
                data.update(lab_restore_s=round(restore_wall, 2), restored=restored["restored"],
                            states_after_restore=states)

                load.mark("lab down")
                down_wall, result = nestor_timed(home, "lab", "down", NAME, "-o", "json")
                lab_made = False
                data.update(lab_down_s=round(down_wall, 2), removed=len(json.loads(result.stdout)["removed"]))
            finally:
                load.mark("end")
                data["load_average"] = load.to_json()
    except BaseException as exc:  # SystemExit from a failed command too: record what was measured
        failure = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if lab_made:
            nestor_timed(home, "lab", "down", NAME, check=False, timeout=600)
        nestor_timed(home, "quickstart", "--teardown", netns=ns, check=False, timeout=600)
        killed = reap(home, namespaces)
        if killed:
            print(f"reaped by pid: {killed}", file=sys.stderr)
        shutil.rmtree(home, ignore_errors=True)
        if failure is not None:
            record("lab_failed", {"error": failure[-4000:], **data})

    raw_median = float(data["raw_appliance_boot_s"]["median"])  # type: ignore[index]
    qs_total = float(data["quickstart_total_s"])  # type: ignore[arg-type]
    up_s, ready_s = float(data["lab_up_s"]), float(data["lab_up_to_both_pings_s"])  # type: ignore[arg-type]
    again_s = float(data["lab_up_again_s"]["median"])  # type: ignore[index]
    plan_s = float(data["lab_plan_s"]["median"])  # type: ignore[index]
    restore_s = float(data["lab_restore_s"])  # type: ignore[arg-type]
    goals = {
        "lab up <= 1.5x quickstart": {"ratio": round(up_s / qs_total, 2), "met": up_s <= 1.5 * qs_total,
                                      "to_both_pings_ratio": round(ready_s / qs_total, 2)},
        "lab up again <= 1 s": {"median_s": round(again_s, 3), "met": again_s <= 1.0},
        "lab plan <= 0.5 s": {"median_s": round(plan_s, 3), "met": plan_s <= 0.5},
        "lab restore <= 0.5x lab up": {"ratio": round(restore_s / up_s, 2), "met": restore_s <= 0.5 * up_s},
        "quickstart <= 5x raw boot": {"ratio": round(qs_total / raw_median, 2), "met": qs_total <= 5 * raw_median},
    }
    record("lab", {"goals": goals, **data})


if __name__ == "__main__":
    main()
