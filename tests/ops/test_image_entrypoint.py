"""The image's entrypoint, run as the Dockerfile and the ECS task run it, without a container engine.

A plain venv gets the locked dependencies (hash-checked, as the build stage) and the project's wheel (as
the runtime stage: ``--no-index --find-links``); the Dockerfile's COPY'd config and schemas sit under a
temporary root; the environment is the task definition's for real stack parameters. Then the Dockerfile's
ENTRYPOINT + CMD runs in its WORKDIR against moto S3 and PostgreSQL, must replicate the feed exactly, answer
the HEALTHCHECK command (once the HTTP server exists) and exit 0 on SIGTERM within the task's stopTimeout.

Deviations, because this is not a container: paths under /etc/replicator and /var/lib/replicator are moved
under a temporary folder; the HTTP port is a free one instead of 9100 (other tests share this machine); the
warehouse connection uses sslmode=disable without sslrootcert (the test PostgreSQL has no TLS); S3 is moto's
endpoint.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from replicator.demo import feed as demo
from replicator.storage import S3Settings
from tests.helpers.deploy import ROOT, exec_form, healthcheck, runtime_stage, task_environment, template
from tests.helpers.ports import free_port
from tests.helpers.support import assert_same_state, expected_state, postgres_state


def _pip(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv built the way the Dockerfile builds /opt/venv."""
    base = tmp_path_factory.mktemp("image")
    wheels, venv = base / "wheels", base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    _pip("--python", python, "install", "--require-hashes", "-r", str(ROOT / "requirements.lock"))
    _pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT))
    _pip(
        "--python", python, "install", "--no-cache-dir", "--no-index", f"--find-links={wheels}", "replicator"
    )
    return venv


def _image_root(root: Path) -> dict[str, str]:
    """Lay out the runtime stage's COPY instructions under ``root``; returns the Dockerfile's ENV."""
    env: dict[str, str] = {}
    for word, args in runtime_stage():
        if word == "COPY" and not args.startswith("--"):
            src, dest = args.split()
            target = root / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target)
            else:
                shutil.copy(ROOT / src, target)
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def _in_root(root: Path, value: str) -> str:
    return re.sub(r"(/etc/replicator|/var/lib/replicator)", lambda m: str(root) + m[1], value)


def _upload(folder: Path, bucket: str, prefix: str, settings: S3Settings) -> None:
    s3 = boto3.client("s3", endpoint_url=settings.endpoint_url, region_name="us-east-1")
    for path in sorted(folder.rglob("*.csv")):
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_the_images_entrypoint_replicates_answers_its_health_check_and_stops_on_sigterm(
    image_venv: Path, tmp_path: Path, s3_bucket: str, s3_settings: S3Settings, pg_dsn: str
) -> None:
    root = tmp_path / "root"
    dockerfile_env = _image_root(root)
    workdir = root / [a for w, a in runtime_stage() if w == "WORKDIR"][-1].lstrip("/")
    workdir.mkdir(parents=True)

    feed = tmp_path / "dms"
    demo.generate(feed, patients=40, cdc_files=3, changes_per_file=40)
    _upload(feed, s3_bucket, "sales", s3_settings)

    dsn = dict(p.split("=", 1) for p in pg_dsn.split())
    params = {
        "ImageUri": "replicator@sha256:" + "0" * 64,
        "SourceBucket": s3_bucket, "SourcePrefix": "sales", "DmsTimestampColumnName": "dms_commit_ts",
        "StagingBucket": s3_bucket, "StagingPrefix": "replicator",
        "WarehouseHost": dsn["host"], "WarehousePort": dsn.get("port", "5432"),
        "WarehouseDatabase": dsn["dbname"], "WarehouseUser": dsn.get("user", "postgres"),
        "WarehousePasswordSecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:wh",
        "AdminTokenSecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:admin",
        "BatchMaxAgeSeconds": "0.5", "WarehouseKind": "postgres",
    }  # fmt: skip
    task_env = task_environment(
        params, {"REPLICATOR__WAREHOUSE__PASSWORD": "unused", "REPLICATOR__HTTP__ADMIN_TOKEN": "t" * 32}
    )
    port = free_port()
    env = {
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **{k: v.replace("$PATH", os.environ["PATH"]) for k, v in dockerfile_env.items()},
        **task_env,
        "REPLICATOR__S3__ENDPOINT_URL": str(s3_settings.endpoint_url),
        "REPLICATOR__S3__REGION": "us-east-1",
        "REPLICATOR__WAREHOUSE__SSLMODE": "disable",
        "REPLICATOR__WAREHOUSE__SSLROOTCERT": "",  # empty: ignored, so no CA with sslmode=disable
        "REPLICATOR__HTTP__PORT": str(port),
        "REPLICATOR__HTTP__HOST": "127.0.0.1",
        "REPLICATOR__PIPELINE__POLL_INTERVAL_SECONDS": "0.2",
    }
    env["PATH"] = env["PATH"].replace("/opt/venv", str(image_venv))
    command = [_in_root(root, a) for a in exec_form("ENTRYPOINT") + exec_form("CMD")]
    assert command[0] == "replicator"
    command[0] = shutil.which("replicator", path=env["PATH"]) or "replicator-not-in-the-image-venv"
    assert command[0].startswith(str(image_venv)), command[0]

    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        want = expected_state(feed)
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-3000:]}"
            try:
                if postgres_state(pg_dsn) == want:
                    break
            except Exception:  # tables not created yet
                pass
            assert time.monotonic() < deadline, f"not replicated within 120 s: {log.read_text()[-3000:]}"
            time.sleep(1)
        assert_same_state(postgres_state(pg_dsn), want)

        if (ROOT / "replicator" / "obs" / "server.py").exists():
            _, check = healthcheck()
            check = [c.replace(":9100/", f":{port}/") for c in check]
            check[0] = shutil.which(check[0], path=env["PATH"]) or check[0]
            result = subprocess.run(check, env=env, capture_output=True, text=True, timeout=10, check=False)
            assert result.returncode == 0, result.stderr

        stop_timeout = int(template()["Parameters"]["StopTimeoutSeconds"]["Default"])
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=stop_timeout) == 0, log.read_text()[-3000:]
        assert time.monotonic() - started < stop_timeout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
