"""Helpers for the deploy tests: read the Dockerfile and the CloudFormation template as ECS would use them."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TEMPLATE = DEPLOY / "cloudformation" / "replicator.yaml"


def tool(name: str, *extra_dirs: Path) -> str:
    """The path of a command-line tool: this venv's bin, then ``extra_dirs``, then PATH. A missing tool fails
    the test under CI (CI=true, where scripts/test.sh installs it) and skips it on a developer machine."""
    for folder in (Path(sys.executable).parent, *extra_dirs):
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (scripts/test.sh installs it: see scripts/lib.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# --- Dockerfile ---------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    out = []
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (the image that runs)."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def exec_form(instruction: str) -> list[str]:
    """The JSON (exec form) argument list of the runtime stage's ENTRYPOINT or CMD; fails on shell form."""
    args = [rest for word, rest in runtime_stage() if word == instruction][-1]
    value = json.loads(args)
    assert isinstance(value, list), f"{instruction} must use the exec form (a JSON list)"
    return [str(v) for v in value]


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """The runtime stage's HEALTHCHECK options (--interval=30s -> {"interval": "30s"}) and its CMD list."""
    args = [rest for word, rest in runtime_stage() if word == "HEALTHCHECK"][-1]
    options, _, command = args.partition(" CMD ")
    opts = dict(re.findall(r"--([a-z-]+)=(\S+)", options))
    return opts, [str(v) for v in json.loads(command)]


# --- CloudFormation -----------------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref x -> {"Ref": x}, !Sub s -> {"Fn::Sub": s})."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def template() -> dict[str, Any]:
    doc = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # a SafeLoader subclass
    assert isinstance(doc, dict)
    return doc


class Resolver:
    """Evaluates the intrinsic functions this template uses, for given parameter values (defaults fill in)."""

    NO_VALUE = object()

    def __init__(self, doc: dict[str, Any], params: dict[str, str], region: str = "eu-west-1") -> None:
        self.doc = doc
        self.values: dict[str, Any] = {
            name: str(spec["Default"]) for name, spec in doc["Parameters"].items() if "Default" in spec
        }
        self.values.update(params)
        self.values.update({"AWS::Region": region, "AWS::AccountId": "123456789012", "AWS::Partition": "aws"})
        self.values["AWS::StackName"] = "replicator"

    def condition(self, name: str) -> bool:
        return bool(self.eval(self.doc["Conditions"][name]))

    def eval(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.eval(n) for n in node) if v is not self.NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                if arg == "AWS::NoValue":
                    return self.NO_VALUE
                return self.values.get(arg, f"<{arg}>")
            if key == "Fn::Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: str(self.values.get(m[1], f"<{m[1]}>")), arg)
            if key == "Fn::If":
                cond, yes, no = arg
                return self.eval(yes if self.condition(cond) else no)
            if key == "Fn::Equals":
                left, right = (self.eval(a) for a in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.eval(arg[0])
            if key == "Fn::And":
                return all(self.eval(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::FindInMap":
                table, first, second = (self.eval(a) for a in arg)
                return self.doc["Mappings"][table][str(first)][second]
            if key == "Fn::GetAtt":
                return f"<{'.'.join(arg)}>"
        return {k: v for k, v in ((k, self.eval(v)) for k, v in node.items()) if v is not self.NO_VALUE}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    defs = doc["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert len(defs) == 1
    return dict(defs[0])


def task_environment(params: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    """The container's environment as ECS would set it for ``params``: Environment entries plus each entry of
    Secrets, with the value ECS would read from Secrets Manager taken from ``secrets`` (by variable name)."""
    doc = template()
    spec = Resolver(doc, params).eval(container(doc))
    env = {e["Name"]: str(e["Value"]) for e in spec["Environment"]}
    for entry in spec.get("Secrets", []):
        env[entry["Name"]] = secrets[entry["Name"]]
    return env


# The stack parameters and secrets of a DMS task, as the task-definition tests pass them.
DMS_PARAMS = {
    "ImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/replicator@sha256:" + "0" * 64,
    "SourceBucket": "dms-bucket",
    "SourcePrefix": "sales",
    "DmsTimestampColumnName": "dms_commit_ts",
    "StagingBucket": "staging-bucket",
    "WarehouseHost": "analytics.example.internal",
    "WarehouseDatabase": "analytics",
    "WarehousePasswordSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:wh-AbCdEf",
    "AdminTokenSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:admin-AbCdEf",
}
SECRETS = {
    "REPLICATOR__WAREHOUSE__PASSWORD": "wh-secret",
    "REPLICATOR__HTTP__ADMIN_TOKEN": "admin-secret-" + "0" * 32,
    "REPLICATOR__SOURCE__POSTGRES__PASSWORD": "src-secret",
}
