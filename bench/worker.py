"""One side of the benchmarks in its own process: reads JSON commands on stdin, answers JSON lines.

Separate processes keep the sides from sharing caches, imports or heap, and let each side's peak memory
be read from the kernel: VmHWM of this process and of its children (a Spark JVM), reset per benchmark
through /proc/<pid>/clear_refs.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def _tree() -> list[int]:
    try:
        import psutil

        return [os.getpid()] + [child.pid for child in psutil.Process().children(recursive=True)]
    except Exception:
        return [os.getpid()]


def _hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_reset() -> dict:
    for pid in _tree():
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass
    return {}


def memory_peak() -> dict:
    return {"peak_mib": round(sum(_hwm_kib(pid) for pid in _tree()) / 1024, 1)}


def main() -> None:
    side_name, config_path = sys.argv[1], sys.argv[2]
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # prints of libraries go to the log, never into the protocol
    sys.stdout = sys.stderr
    config = json.loads(Path(config_path).read_text())
    try:
        from bench.sides import load_side

        side = load_side(side_name)(config)
        protocol.write(json.dumps({"ok": True, "result": "ready"}) + "\n")
    except BaseException:
        protocol.write(json.dumps({"ok": False, "error": traceback.format_exc()}) + "\n")
        return
    builtins = {"memory_reset": memory_reset, "memory_peak": memory_peak}
    for line in sys.stdin:
        message = json.loads(line)
        if message["op"] == "quit":
            break
        try:
            handler = builtins.get(message["op"]) or getattr(side, message["op"])
            reply = {"ok": True, "result": handler(**message.get("args", {}))}
        except BaseException:
            reply = {"ok": False, "error": traceback.format_exc()}
        protocol.write(json.dumps(reply) + "\n")
    stop = getattr(getattr(side, "spark", None), "stop", None)
    if stop:
        stop()


if __name__ == "__main__":
    main()
