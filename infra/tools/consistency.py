"""Checks that infra/ deploys what the code expects, so that drift fails `make lint-infra`.

The linters prove the template is valid CloudFormation; they cannot know that the
functions read PODBRIDGE_EVENT_BUS, that the reconciler queries an index named `active`,
or that dispatch answers with partial batch responses. This reads both sides and
compares them:

- every crate under functions/ is deployed, with its own binary, and every deployed
  function sets exactly the PODBRIDGE_* variables its code (and shared/) reads;
- the job table has the keys, index, billing mode and TTL of `create_table`;
- the alarms on the functions' metrics watch the namespace the functions are given and a
  metric the code prints, and the event permission names the source and detail-type the
  code publishes;
- what EventBridge delivers to a function is what its code reads: a rule's detail-types
  are those the function handles, a schedule's input is a tick the function accepts;
  each such rule and schedule has a retry policy, a dead-letter queue and (a rule) the
  permission to invoke and to dead-letter, and the function its own dead-letter queue
  for failed invocations; every dead-letter queue has an alarm;
- reconcile's timeout leaves room for its pass besides following pods;
- rbac.yaml binds the template's Kubernetes group and grants nothing beyond pods,
  their logs and events;
- every checkov finding skipped in the template says why;
- every samconfig.toml environment builds and validates infra/template.yaml, deploys
  what the build wrote, and passes only parameters the template declares, with values
  it allows.

Runs with the tools venv's Python (samtranslator expands Globals the way SAM does).
"""

from __future__ import annotations

import json
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


def getatt(value) -> tuple[str, str] | None:
    """(logical id, attribute) of a `!GetAtt`, else None."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return tuple(target.split(".", 1) if isinstance(target, str) else target)
    return None


def rust_consts(source: str) -> dict[str, str]:
    return dict(re.findall(r'const (\w+): &str = "([^"]*)";', source))


def parameter_overrides(deploy: dict) -> dict[str, str]:
    """A samconfig.toml environment's `parameter_overrides` (a list or one string)."""
    overrides = deploy.get("parameter_overrides", [])
    if isinstance(overrides, str):
        overrides = overrides.split()
    return dict(item.split("=", 1) for item in overrides)


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


def check_metrics_and_events(raw: dict, cfn: dict, shared_src: str) -> None:
    # The functions print under PODBRIDGE_METRICS_NAMESPACE; the alarms on their metrics
    # must name the very same value (the same template expression).
    variable = "PODBRIDGE_METRICS_NAMESPACE"
    namespace = raw.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}).get(variable)
    if namespace is None:
        problem(f"Globals: {variable} is not set for every function")
    for logical_id, resource in raw["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            variables = cfn["Resources"][logical_id]["Properties"].get("Environment", {}).get("Variables", {})
            if variables.get(variable) != namespace:
                problem(f"{logical_id}: {variable} differs from the other functions' (set it in Globals only)")
    parameter = raw["Parameters"].get("MetricsNamespace", {})
    pattern = parameter.get("AllowedPattern", "")
    # CloudWatch: 1 to 255 of A-Za-z0-9._#:/-, and AWS/ is for AWS's own metrics.
    for value, valid in [("podbridge", True), ("podbridge/dev-1_a.b#c:d", True), ("AWS/Lambda", False),
                         ("pod bridge", False), ("p" * 256, False)]:
        if bool(re.fullmatch(pattern, value)) != valid:
            problem(f"MetricsNamespace: AllowedPattern {'refuses' if valid else 'allows'} {value!r}")

    dimension = rust_const(shared_src, "FUNCTION")
    metric_names = set(re.findall(r'=> "(\w+)"', (ROOT / "shared/src/metrics.rs").read_text()))
    for logical_id, resource in raw["Resources"].items():
        props = resource["Properties"]
        if resource["Type"] != "AWS::CloudWatch::Alarm" or str(props["Namespace"]).startswith("AWS/"):
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


def function_source(raw: dict, logical_id: str) -> str:
    crate_dir = (TEMPLATE.parent / raw["Resources"][logical_id]["Properties"]["CodeUri"]).resolve()
    return rust_sources(crate_dir / "src")


def queue_of(raw: dict, value, where: str) -> str | None:
    """The logical id of the SQS queue that `value` (a `!GetAtt Queue.Arn`) names."""
    ref = getatt(value)
    if not ref or ref[1] != "Arn" or raw["Resources"].get(ref[0], {}).get("Type") != "AWS::SQS::Queue":
        problem(f"{where}: the dead-letter queue must be !GetAtt <a queue of this template>.Arn, not {value!r}")
        return None
    return ref[0]


def role_grants(raw: dict, role: str, action: str, resource) -> bool:
    for logical_id, statement in iam_statements(raw):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if logical_id == role and action in actions and statement["Resource"] == resource:
            return True
    return False


def check_tick(where: str, tick_text: str, source: str, parameters: dict) -> None:
    """A schedule's input against the function's `Tick` (its fields, names and values)."""
    struct = re.search(r"pub struct Tick \{(.*?)\n\}", source, re.S)
    policy = re.search(r"pub enum ConcurrencyPolicy \{(.*?)\n\}", source, re.S)
    max_name = re.search(r"const MAX_SCHEDULE_NAME: usize = (\d+);", source)
    if not (struct and policy and max_name and 'rename_all = "camelCase"' in source):
        problem(f"{where}: no Tick, ConcurrencyPolicy or MAX_SCHEDULE_NAME in the function (update consistency.py)")
        return
    fields, required = set(), set()
    for attrs, name in re.findall(r"((?:\s*(?:///[^\n]*|#\[[^\n]*\]))*)\s*pub (\w+):", struct.group(1)):
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
        fields.add(camel)
        if "#[serde(default)]" not in attrs:
            required.add(camel)
    policies = {name.lower() for name in re.findall(r"^\s*(?:#\[default\]\s*)?(\w+),$", policy.group(1), re.M)}
    text = re.sub(r"\$\{(\w+)\}", lambda m: str(parameters.get(m.group(1), {}).get("Default", m.group(0))), tick_text)
    try:
        tick = json.loads(text)
    except json.JSONDecodeError as error:
        problem(f"{where}: the input is not JSON ({error})")
        return
    for name in sorted(set(tick) - fields):
        problem(f"{where}: the tick has {name!r}, which Tick does not know (it has {sorted(fields)})")
    for name in sorted(required - set(tick)):
        problem(f"{where}: the tick has no {name!r}")
    if tick.get("scheduledTime") != "<aws.scheduler.scheduled-time>":
        problem(f"{where}: scheduledTime must be <aws.scheduler.scheduled-time>, each tick's own time")
    name = tick.get("schedule", "")
    if not (isinstance(name, str) and len(name) <= int(max_name.group(1))
            and re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", name)):
        problem(f"{where}: schedule {name!r} is not 1 to {max_name.group(1)} of A-Z a-z 0-9 - _ .")
    if tick.get("concurrencyPolicy", "allow") not in policies:
        problem(f"{where}: concurrencyPolicy {tick.get('concurrencyPolicy')!r} is not one of {sorted(policies)}")
    job = tick.get("job")
    if not isinstance(job, dict) or "id" in job or "image" not in job:
        problem(f"{where}: the tick's job must be a job object with an image and without an id")


def check_event_targets(raw: dict) -> None:
    """Rules and schedules that invoke a function, and what that function needs for them."""
    resources = raw["Resources"]
    functions = {k for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    bus = raw["Globals"]["Function"]["Environment"]["Variables"].get("PODBRIDGE_EVENT_BUS")
    invoked: set[str] = set()
    dead_letter_queues: set[str] = set()

    for logical_id, resource in resources.items():
        props = resource["Properties"]
        if resource["Type"] == "AWS::Events::Rule":
            targets = props.get("Targets", [])
        elif resource["Type"] == "AWS::Scheduler::Schedule":
            targets = [props["Target"]]
        else:
            continue
        for target in targets:
            ref = getatt(target.get("Arn"))
            if not ref or ref[0] not in functions:
                continue
            function = ref[0]
            invoked.add(function)
            where = f"{logical_id} → {function}"
            retry = target.get("RetryPolicy", {})
            if "MaximumEventAgeInSeconds" not in retry or "MaximumRetryAttempts" not in retry:
                problem(f"{where}: no RetryPolicy with MaximumRetryAttempts and MaximumEventAgeInSeconds")
            queue = queue_of(raw, target.get("DeadLetterConfig", {}).get("Arn"), where)
            if queue:
                dead_letter_queues.add(queue)
            source = function_source(raw, function)

            if resource["Type"] == "AWS::Events::Rule":
                # The detail-types the function handles: its `Some(CONST) => Ok(...)` arms.
                consts = rust_consts(source)
                arms = re.findall(r"Some\((\w+)\) => Ok\(", source)
                handled = sorted(consts[name] for name in arms if name in consts)
                matched = sorted(props.get("EventPattern", {}).get("detail-type", []))
                if matched != handled:
                    problem(f"{where}: the rule matches detail-types {matched}, the function handles {handled}")
                if props.get("EventBusName") != bus:
                    problem(f"{logical_id}: EventBusName must be the functions' bus, as PODBRIDGE_EVENT_BUS")
                rule_arn = {"Fn::GetAtt": [logical_id, "Arn"]}
                permitted = any(
                    r["Type"] == "AWS::Lambda::Permission"
                    and getatt(r["Properties"].get("FunctionName")) == (function, "Arn")
                    and r["Properties"].get("Principal") == "events.amazonaws.com"
                    and getatt(r["Properties"].get("SourceArn")) == (logical_id, "Arn")
                    for r in resources.values()
                )
                if not permitted:
                    problem(f"{where}: no AWS::Lambda::Permission for events.amazonaws.com with this rule as SourceArn")
                dead_letters_allowed = any(
                    r["Type"] == "AWS::SQS::QueuePolicy"
                    and {"Ref": queue} in r["Properties"]["Queues"]
                    and any(
                        s.get("Principal") == {"Service": "events.amazonaws.com"}
                        and s.get("Action") == "sqs:SendMessage"
                        and getatt(s.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn"))
                        == (logical_id, "Arn")
                        for s in r["Properties"]["PolicyDocument"]["Statement"]
                    )
                    for r in resources.values()
                )
                if queue and not dead_letters_allowed:
                    problem(f"{where}: {queue}'s policy must let events.amazonaws.com send from {rule_arn}")
            else:
                role = getatt(target.get("RoleArn"))
                role = role[0] if role else None
                if role not in resources or resources[role]["Type"] != "AWS::IAM::Role":
                    problem(f"{where}: RoleArn must be !GetAtt <a role of this template>.Arn")
                else:
                    wanted = [("lambda:InvokeFunction", {"Fn::GetAtt": [function, "Arn"]})]
                    if queue:
                        wanted.append(("sqs:SendMessage", {"Fn::GetAtt": [queue, "Arn"]}))
                    for action, arn in wanted:
                        if not role_grants(raw, role, action, arn):
                            problem(f"{where}: {role} must grant {action} on {arn}")
                    granted = [(s["Action"], s["Resource"]) for r, s in iam_statements(raw) if r == role]
                    if sorted(map(str, granted)) != sorted(map(str, wanted)):
                        problem(f"{where}: {role} grants {granted}, no more than {wanted} is needed")
                    if resources[role]["Properties"].get("ManagedPolicyArns"):
                        problem(f"{where}: {role} must have no managed policies")
                input_text = target.get("Input")
                if isinstance(input_text, dict):
                    input_text = input_text.get("Fn::Sub")
                if not isinstance(input_text, str):
                    problem(f"{where}: the schedule's Input must be a tick (a string or !Sub of one)")
                else:
                    check_tick(where, input_text, source, raw["Parameters"])

    # EventBridge and Scheduler invoke asynchronously: a failed invocation is Lambda's to
    # retry and then to dead-letter, with the function's role.
    for function in sorted(invoked):
        props = resources[function]["Properties"]
        if "MaximumRetryAttempts" not in props.get("EventInvokeConfig", {}):
            problem(f"{function}: invoked by EventBridge, it needs an EventInvokeConfig with MaximumRetryAttempts")
        dlq = props.get("DeadLetterQueue", {})
        queue = queue_of(raw, dlq.get("TargetArn"), f"{function}.DeadLetterQueue") if dlq.get("Type") == "SQS" else None
        if queue is None:
            problem(f"{function}: invoked by EventBridge, it needs a DeadLetterQueue (Type SQS) for failed invocations")
            continue
        dead_letter_queues.add(queue)
        role = getatt(props.get("Role"))
        if not role or not role_grants(raw, role[0], "sqs:SendMessage", {"Fn::GetAtt": [queue, "Arn"]}):
            problem(f"{function}: its role must grant sqs:SendMessage on {queue}, its dead-letter queue")

    for resource in resources.values():
        if resource["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in resource["Properties"]:
            ref = getatt(resource["Properties"]["RedrivePolicy"].get("deadLetterTargetArn"))
            if ref:
                dead_letter_queues.add(ref[0])
    for queue in sorted(dead_letter_queues):
        watched = any(
            r["Type"] == "AWS::CloudWatch::Alarm"
            and r["Properties"].get("Namespace") == "AWS/SQS"
            and r["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
            and getatt(r["Properties"].get("Dimensions", [{}])[0].get("Value")) == (queue, "QueueName")
            for r in resources.values()
        )
        if not watched:
            problem(f"{queue}: a dead-letter queue without an alarm on ApproximateNumberOfMessagesVisible")


# Seconds of a reconcile invocation left for the pass, besides the watch and the margin.
PASS_BUDGET = 30


def check_reconcile_timeout(raw: dict) -> None:
    """Reconcile follows pods for PODBRIDGE_FOLLOW_SECONDS after its pass, until its margin
    before the deadline: its timeout must leave room for the pass."""
    lib = (ROOT / "functions/reconcile/src/lib.rs").read_text()
    main_rs = (ROOT / "functions/reconcile/src/main.rs").read_text()
    follow = re.search(r'"PODBRIDGE_FOLLOW_SECONDS", Duration::from_secs\((\d+)\)', lib)
    margin = re.search(r"const DEADLINE_MARGIN: Duration = Duration::from_secs\((\d+)\);", main_rs)
    if not (follow and margin):
        problem("functions/reconcile: the follow default or DEADLINE_MARGIN not found (update consistency.py)")
        return
    parameters = raw["Parameters"]

    def fits(where: str, timeout: str, follow_seconds: str) -> None:
        follow_for = int(follow_seconds or follow.group(1))
        if int(timeout) < follow_for + int(margin.group(1)) + PASS_BUDGET:
            problem(
                f"{where}: ReconcileTimeout {timeout} leaves less than {PASS_BUDGET} s for the pass besides "
                f"FollowSeconds ({follow_for}) and the {margin.group(1)} s margin"
            )

    fits("template defaults", str(parameters["ReconcileTimeout"]["Default"]), parameters["FollowSeconds"]["Default"])
    for env, commands in tomllib.loads(SAMCONFIG.read_text()).items():
        deploy = commands.get("deploy", {}).get("parameters", {}) if isinstance(commands, dict) else {}
        values = parameter_overrides(deploy)
        if "ReconcileTimeout" in values or "FollowSeconds" in values:
            fits(
                f"samconfig.toml [{env}]",
                values.get("ReconcileTimeout", str(parameters["ReconcileTimeout"]["Default"])),
                values.get("FollowSeconds", parameters["FollowSeconds"]["Default"]),
            )


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
        values = parameter_overrides(deploy)
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
    check_metrics_and_events(raw, cfn, shared_src)
    check_event_targets(raw)
    check_reconcile_timeout(raw)
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
