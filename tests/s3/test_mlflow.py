"""MLflow's client logging and downloading artifacts through the gateway
(``MLFLOW_S3_ENDPOINT_URL``), with a file-store tracking URI and an
experiment whose artifacts live at ``s3://BUCKET/...``. Each side runs in
its own process, as separate notebooks would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict

from s3util import replicated

LOG = textwrap.dedent(
    """
    import json, sys
    import mlflow
    tracking, bucket, src = sys.argv[1:4]
    mlflow.set_tracking_uri(tracking)
    exp = mlflow.create_experiment("weft-s3", artifact_location=f"s3://{bucket}/mlflow")
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_param("lr", 0.5)
        mlflow.log_metric("accuracy", 0.96)
        mlflow.log_artifact(f"{src}/report.json")
        mlflow.log_artifacts(f"{src}/model", artifact_path="model")
    listed = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
    print(json.dumps({"run": run.info.run_id, "uri": run.info.artifact_uri, "listed": sorted(listed)}))
    """
)

DOWNLOAD = textwrap.dedent(
    """
    import json, sys
    import mlflow
    tracking, run, dst = sys.argv[1:4]
    mlflow.set_tracking_uri(tracking)
    model = mlflow.artifacts.download_artifacts(run_id=run, artifact_path="model", dst_path=dst)
    report = mlflow.artifacts.download_artifacts(run_id=run, artifact_path="report.json", dst_path=dst)
    print(json.dumps({"model": model, "report": report}))
    """
)


def python(env: Dict[str, str], script: str, *args: str) -> Dict[str, Any]:
    p = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=180
    )
    if p.returncode != 0:
        raise AssertionError(f"mlflow script failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-5000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_mlflow_log_and_download_artifacts(
    s3: Dict[str, Any], s3a: Any, s3b: Any, bucket: str, clean_env: Dict[str, str], tmp_path: Path
) -> None:
    tracking = (tmp_path / "mlruns").as_uri()
    src = tmp_path / "src"
    (src / "model").mkdir(parents=True)
    (src / "report.json").write_text(json.dumps({"accuracy": 0.96}))
    (src / "model" / "weights.bin").write_bytes(os.urandom(1_500_000))
    (src / "model" / "MLmodel").write_text("flavors: {}\n")
    # MLflow 3 keeps the file store in maintenance mode behind this switch
    env = dict(
        clean_env,
        MLFLOW_S3_ENDPOINT_URL=s3["endpoints"][0],
        MLFLOW_ALLOW_FILE_STORE="true",
        GIT_PYTHON_REFRESH="quiet",
    )
    logged = python(env, LOG, tracking, bucket, str(src))
    assert logged["uri"] == f"s3://{bucket}/mlflow/{logged['run']}/artifacts"
    assert logged["listed"] == ["model", "report.json"]
    replicated(s3a, s3b, bucket)

    # downloaded through node 2
    env2 = dict(env, MLFLOW_S3_ENDPOINT_URL=s3["endpoints"][1])
    got = python(env2, DOWNLOAD, tracking, logged["run"], str(tmp_path / "dst"))
    model = Path(got["model"])
    assert (model / "weights.bin").read_bytes() == (src / "model" / "weights.bin").read_bytes()
    assert (model / "MLmodel").read_text() == "flavors: {}\n"
    assert json.loads(Path(got["report"]).read_text()) == {"accuracy": 0.96}
