"""Checks that infra/ deploys what the code expects, so that drift fails `make lint-infra`.

The linters prove the template is valid CloudFormation; they cannot know that the
functions read PODBRIDGE_EVENT_BUS, that the reconciler queries an index named `active`,
or that dispatch answers with partial batch responses. This reads both sides and
compares them:

- every crate under functions/ is deployed, with its own binary, and every deployed
  function sets exactly the PODBRIDGE_* variables its code (and shared/) reads;
- the job table has the keys, index, billing mode and TTL of `create_table`;
- the stale-jobs alarm watches a metric the code prints, and the event permission
  names the source and detail-type the code publishes;
- rbac.yaml binds the template's Kubernetes group and grants nothing beyond pods,
  their logs and events;
- every checkov finding skipped in the template says why;
- every samconfig.toml environment builds and validates infra/template.yaml, deploys
  what the build wrote, and passes only parameters the template declares, with values
  it allows.

Runs with the tools venv's Python (samtranslator expands Globals the way SAM does).
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path

import yaml
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra/template.yaml"
RBAC = ROOT / "infra/rbac.yaml"
SAMCONFIG = ROOT / "samconfig.toml"

# The Kubernetes access the functions need (docs/DEPLOY.md): anything beyond is a leak.
ALLOWED_RBAC = {
    "pods": {"create", "get", "list", "watch", "delete"},
    "pods/log": {"get"},
    "events": {"list", "watch"},
}

problems: list[str] = []


def problem(message: str) -> None:
    problems.append(message)


def rust_sources(directory: Path) -> str:
    """The non-test Rust source under `directory`: each file up to its `#[cfg(test)]`."""
    texts = []
    for path in sorted(directory.rglob("*.rs")):
        text = path.read_text()
        texts.append(text.split("#[cfg(test)]", 1)[0])
    return "\n".join(texts)


def env_vars_read(source: str) -> set[str]:
    return set(re.findall(r'"(PODBRIDGE_[A-Z0-9_]+)"', source))


def rust_const(source: str, name: str) -> str | None:
    match = re.search(rf'const {name}: &str = "([^"]*)";', source)
    return match.group(1) if match else None


def upper_snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


def iam_statements(raw: dict):
    """(role, statement) for every statement of the roles' inline policies."""
    for logical_id, resource in raw["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    yield logical_id, statement


def translated_template() -> tuple[dict, dict]:
    """The template as written, and as SAM expands it (Globals merged into functions)."""
    raw = yaml_parse(TEMPLATE.read_text())
    expanded = yaml_parse(TEMPLATE.read_text())
    for resource in expanded["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            # The translator wants an uploaded artifact; the location does not matter here.
            resource["Properties"]["CodeUri"] = "s3://bucket/key"

    # The translator asks for a region to build ARNs; none is contacted.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    class NoManagedPolicies:
        def load(self) -> dict:
            return {}

    return raw, transform(expanded, {}, NoManagedPolicies())


def check_functions(raw: dict, cfn: dict, shared_src: str) -> None:
    shared_vars = env_vars_read(shared_src)
    deployed: dict[str, str] = {}
    for logical_id, resource in raw["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props, metadata = resource["Properties"], resource.get("Metadata", {})
        crate_dir = (TEMPLATE.parent / props["CodeUri"]).resolve()
        crate = crate_dir.relative_to(ROOT).as_posix()
        deployed[crate] = logical_id
        manifest = tomllib.loads((crate_dir / "Cargo.toml").read_text())
        bins = [b["name"] for b in manifest.get("bin", [])] or [manifest["package"]["name"]]
        binary = metadata.get("BuildProperties", {}).get("Binary")
        if metadata.get("BuildMethod") != "rust-cargolambda":
            problem(f"{logical_id}: Metadata.BuildMethod must be rust-cargolambda")
        if binary not in bins:
            problem(f"{logical_id}: BuildProperties.Binary is {binary!r}, {crate}/Cargo.toml builds {bins}")

        function = cfn["Resources"][logical_id]["Properties"]
        for key, want in [("Runtime", "provided.al2023"), ("Architectures", ["arm64"]), ("Handler", "bootstrap")]:
            if function.get(key) != want:
                problem(f"{logical_id}: {key} is {function.get(key)!r}, the build produces {want!r}")
        variables = function.get("Environment", {}).get("Variables", {})
        in_template = {name for name in variables if name.startswith("PODBRIDGE_")}
        read = shared_vars | env_vars_read(rust_sources(crate_dir / "src"))
        for name in sorted(read - in_template):
            problem(f"{logical_id}: the code reads {name}, the template does not set it")
        for name in sorted(in_template - read):
            problem(f"{logical_id}: the template sets {name}, which no code of {crate} or shared/ reads")

    for crate_dir in sorted((ROOT / "functions").iterdir()):
        crate = crate_dir.relative_to(ROOT).as_posix()
        if (crate_dir / "Cargo.toml").exists() and crate not in deployed:
            problem(f"{crate} is a function crate the template does not deploy (add its block to infra/template.yaml)")

    # dispatch answers with batchItemFailures; without this Lambda ignores them and
    # retries whole batches, which cfn-lint does not notice.
    for logical_id, resource in cfn["Resources"].items():
        if resource["Type"] == "AWS::Lambda::EventSourceMapping":
            types = resource["Properties"].get("FunctionResponseTypes")
            if types != ["ReportBatchItemFailures"]:
                problem(f"{logical_id}: FunctionResponseTypes is {types!r}, must be ['ReportBatchItemFailures']")


def check_queue(raw: dict) -> None:
    window = raw["Parameters"]["MaximumBatchingWindowInSeconds"]["MaxValue"]
    for timeout, row in raw["Mappings"]["DispatchTimeouts"].items():
        if row["QueueVisibilityTimeout"] < 6 * int(timeout) + window:
            problem(f"DispatchTimeouts[{timeout}]: visibility timeout below 6 × {timeout} s + {window} s")
    if set(raw["Mappings"]["DispatchTimeouts"]) != set(raw["Parameters"]["DispatchTimeout"]["AllowedValues"]):
        problem("DispatchTimeouts must have a row for each allowed DispatchTimeout")


def check_table(raw: dict) -> None:
    source = (ROOT / "shared/src/store/dynamodb.rs").read_text()
    match = re.search(r"pub async fn create_table\b.*?\n}\n", source, re.S)
    if not match:
        problem("shared/src/store/dynamodb.rs: create_table not found (update infra/tools/consistency.py)")
        return
    body = match.group(0)
    consts = {name: rust_const(source, name) for name in re.findall(r"const (\w+): &str", source)}
    index_part, _, table_part = body.partition(".create_table()")

    def keys(text: str) -> list[dict]:
        pairs = re.findall(r'key\("(\w+)", KeyType::(\w+)\)', text)
        return [{"AttributeName": name, "KeyType": upper_snake(kind)} for name, kind in pairs]

    index_name = re.search(r"\.index_name\((\w+)\)", index_part)
    projection = re.search(r"ProjectionType::(\w+)", index_part)
    billing = re.search(r"BillingMode::(\w+)", table_part)
    ttl = re.search(r"TimeToLiveSpecification::builder\(\)\.attribute_name\((\w+)\)", body)
    if not (index_name and projection and billing and ttl and "ScalarAttributeType::S" in body):
        problem("shared/src/store/dynamodb.rs: create_table no longer reads as expected (update consistency.py)")
        return
    want = {
        "BillingMode": upper_snake(billing.group(1)),
        "AttributeDefinitions": sorted(re.findall(r'string_attr\("(\w+)"\)', table_part)),
        "KeySchema": keys(table_part),
        "GlobalSecondaryIndexes": [
            {
                "IndexName": consts.get(index_name.group(1)),
                "KeySchema": keys(index_part),
                "Projection": {"ProjectionType": upper_snake(projection.group(1))},
            }
        ],
        "TimeToLiveSpecification": {"AttributeName": consts.get(ttl.group(1)), "Enabled": True},
    }
    # The reconciler's Query is granted on the index by name.
    index = want["GlobalSecondaryIndexes"][0]["IndexName"]
    for logical_id, statement in iam_statements(raw):
        resource = statement["Resource"]
        arn = resource.get("Fn::Sub", "") if isinstance(resource, dict) else resource
        if "dynamodb:Query" in statement["Action"] and not arn.endswith(f"/index/{index}"):
            problem(f"{logical_id}: dynamodb:Query is granted on {arn!r}, not on the index {index!r}")
    table = raw["Resources"]["JobTable"]["Properties"]
    have = dict(table, AttributeDefinitions=sorted(a["AttributeName"] for a in table["AttributeDefinitions"]))
    if any(a["AttributeType"] != "S" for a in table["AttributeDefinitions"]):
        problem("JobTable: every key attribute is a string (S) in create_table")
    for key, value in want.items():
        if have.get(key) != value:
            problem(f"JobTable.{key} is {have.get(key)!r}, create_table makes {value!r}")


def check_metrics_and_events(raw: dict, shared_src: str) -> None:
    namespace = rust_const(shared_src, "METRICS_NAMESPACE")
    dimension = rust_const(shared_src, "FUNCTION")
    metric_names = set(re.findall(r'=> "(\w+)"', (ROOT / "shared/src/metrics.rs").read_text()))
    for logical_id, resource in raw["Resources"].items():
        props = resource["Properties"]
        if resource["Type"] != "AWS::CloudWatch::Alarm" or props["Namespace"].startswith("AWS/"):
            continue
        if props["Namespace"] != namespace:
            problem(f"{logical_id}: namespace {props['Namespace']!r}, the functions print under {namespace!r}")
        if props["MetricName"] not in metric_names:
            problem(f"{logical_id}: no metric {props['MetricName']!r} in shared/src/metrics.rs")
        for dim in props.get("Dimensions", []):
            function_src = ROOT / "functions" / dim["Value"] / "src"
            if dim["Name"] != dimension or not function_src.is_dir():
                problem(f"{logical_id}: dimension {dim} is not {dimension}=<a function under functions/>")
            elif f"Counter::{props['MetricName']}" not in rust_sources(function_src) + shared_src:
                problem(f"{logical_id}: {dim['Value']} never counts {props['MetricName']}")

    source = rust_const(shared_src, "SOURCE")
    detail_type = rust_const(shared_src, "DETAIL_TYPE")
    for logical_id, statement in iam_statements(raw):
        if statement["Action"] == "events:PutEvents":
            condition = statement.get("Condition", {}).get("StringEquals", {})
            if condition != {"events:source": source, "events:detail-type": detail_type}:
                problem(f"{logical_id}: PutEvents must be limited to source {source!r}, {detail_type!r}")


def check_rbac(raw: dict) -> None:
    documents = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    group = raw["Parameters"]["KubernetesGroup"]["Default"]
    for doc in documents:
        if doc["kind"] == "Role":
            for rule in doc["rules"]:
                for resource in rule["resources"]:
                    extra = set(rule["verbs"]) - ALLOWED_RBAC.get(resource, set())
                    if rule["apiGroups"] != [""] or extra:
                        problem(f"rbac.yaml grants {sorted(extra) or rule['verbs']} on {resource}: more than needed")
        elif doc["kind"] == "RoleBinding":
            if doc["subjects"] != [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]:
                problem(f"rbac.yaml binds {doc['subjects']}, the access entries map the group {group!r}")
        if "namespace" in doc["metadata"]:
            problem("rbac.yaml must not name a namespace: it is applied with -n to every job namespace")


def check_skips(raw: dict) -> None:
    """A checkov finding may be skipped only with its reason next to it."""
    for logical_id, resource in raw["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            if not str(skip.get("comment", "")).strip():
                problem(f"{logical_id}: checkov skip {skip.get('id')} has no comment saying why")


def check_samconfig(raw: dict) -> None:
    parameters = raw["Parameters"]
    required = {name for name, spec in parameters.items() if "Default" not in spec}
    for env, commands in tomllib.loads(SAMCONFIG.read_text()).items():
        if not isinstance(commands, dict):
            continue
        # build and validate read the source template; deploy must take what build wrote.
        for command in ("build", "validate", "deploy", "global"):
            template_file = commands.get(command, {}).get("parameters", {}).get("template_file")
            want = TEMPLATE.relative_to(ROOT).as_posix() if command in ("build", "validate") else None
            if template_file != want:
                problem(f"samconfig.toml [{env}.{command}]: template_file is {template_file!r}, must be {want!r}")
        deploy = commands.get("deploy", {}).get("parameters")
        if not deploy:
            continue
        overrides = deploy.get("parameter_overrides", [])
        if isinstance(overrides, str):
            overrides = overrides.split()
        values = dict(item.split("=", 1) for item in overrides)
        for name in sorted(required - values.keys()):
            problem(f"samconfig.toml [{env}]: the required parameter {name} is not set")
        for name, value in values.items():
            spec = parameters.get(name)
            if spec is None:
                problem(f"samconfig.toml [{env}]: the template has no parameter {name}")
                continue
            allowed = [str(v) for v in spec.get("AllowedValues", [])]
            pattern = spec.get("AllowedPattern")
            if (allowed and value not in allowed) or (pattern and not re.fullmatch(pattern, value)):
                problem(f"samconfig.toml [{env}]: {name}={value!r} is not allowed by the template")


def main() -> int:
    raw, cfn = translated_template()
    shared_src = rust_sources(ROOT / "shared/src")
    check_functions(raw, cfn, shared_src)
    check_queue(raw)
    check_table(raw)
    check_metrics_and_events(raw, shared_src)
    check_rbac(raw)
    check_skips(raw)
    check_samconfig(raw)
    for message in problems:
        print(f"consistency: {message}", file=sys.stderr)
    if problems:
        print(f"consistency: {len(problems)} problem(s) between infra/ and the code", file=sys.stderr)
        return 1
    print("consistency: the template, rbac.yaml and samconfig.toml agree with the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
