"""`make run`: the whole platform on one machine with embedded defaults.

Starts (or reuses) a nats-server with JetStream, the Dagster webserver and daemon (`dagster
dev`, sensors running), and a simulator publishing a live market session; Ctrl-C stops every
process it started. Run as `python -m lake_platform.commands.run`.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lake_platform.commands.init import sweep_leftovers
from lake_platform.embedded_nats import NatsServer, find_binary, terminate_group
from lake_platform.ingest.connection import NatsUnavailableError, connect
from lake_platform.settings import LakeSettings, redact_url
from lake_platform.simulate.market import SessionSpec, session
from lake_platform.simulate.publisher import publish
from lake_platform.storage import LakeStore

UI_READY_TIMEOUT_S = 180
STOP_TIMEOUT_S = 20
LIVE_SESSION_MINUTES = 24 * 60
WORKSPACE = ("-w", "workspace.yaml")


async def _answers(settings: LakeSettings) -> bool:
    try:
        client = await asyncio.wait_for(connect(settings, name="lake-platform probe"), 3)
    except (NatsUnavailableError, TimeoutError):
        return False
    await client.close()
    return True


def _wait_for_ui(url: str, dagster: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + UI_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if dagster.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {dagster.returncode}")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{url}/server_info", timeout=2).close()
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Dagster UI did not answer at {url} within {UI_READY_TIMEOUT_S}s")


async def _simulate(settings: LakeSettings, rate: float, stop: asyncio.Event) -> None:
    spec = SessionSpec(
        minutes=LIVE_SESSION_MINUTES,
        rate=rate,
        end_ns=time.time_ns() + LIVE_SESSION_MINUTES * 60 * 10**9,
    )
    publishing = asyncio.create_task(publish(settings, session(spec), rate=rate, progress=False))
    await stop.wait()
    publishing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publishing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("DAGSTER_PORT", 3000)))
    parser.add_argument("--rate", type=float, default=100.0, help="simulated events per second")
    args = parser.parse_args()
    settings = LakeSettings.from_env()
    if not settings.use_s3:
        settings = dataclasses.replace(settings, data_root=str(Path(settings.data_root).resolve()))
    sweep_leftovers(LakeStore.from_settings(settings), print)
    nats_server = None
    if asyncio.run(_answers(settings)):
        print(f"using the nats-server at {', '.join(map(redact_url, settings.nats_servers))}")
    else:
        nats_dir = Path(settings.data_root if not settings.use_s3 else "data") / "_nats"
        nats_server = NatsServer.start(nats_dir)
        settings = dataclasses.replace(settings, nats_servers=(nats_server.url,))
        print(f"started nats-server at {nats_server.url} (data in {nats_dir})")
    env = {
        **os.environ,
        "DATA_ROOT": settings.data_root,
        "NATS_URL": ",".join(settings.nats_servers),
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", str(Path(".dagster_home").resolve())),
    }
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    dagster = subprocess.Popen(
        [
            str(find_binary("dagster")),
            "dev",
            *("-h", "127.0.0.1", "-p", str(args.port)),
            *WORKSPACE,
        ],
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{args.port}"
    try:
        _wait_for_ui(url, dagster)
        print(f"\nDagster UI: {url}  (lake: {settings.data_root}; Ctrl-C stops everything)\n")
        stop = asyncio.Event()

        async def live() -> None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await _simulate(settings, args.rate, stop)

        asyncio.run(live())
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping…", file=sys.stderr)
        terminate_group(dagster, STOP_TIMEOUT_S)  # `dagster dev` needs its whole group signalled
        if nats_server is not None:
            nats_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
