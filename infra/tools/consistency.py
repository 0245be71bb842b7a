"""Checks that infra/ deploys what the code expects, so that drift fails `make lint-infra`.

The linters prove the template is valid CloudFormation; they cannot know that the
functions read PODBRIDGE_EVENT_BUS, that the reconciler queries an index named `active`,
or that dispatch answers with partial batch responses. This reads both sides and
compares them:

- every crate under functions/ is deployed, with its own binary, and every deployed
  function sets exactly the PODBRIDGE_* variables its code (and shared/ and core/) reads;
- the job table has the keys, index, billing mode and TTL of `create_table`;
- the alarms on the functions' metrics watch the namespace the functions are given and a
  metric the code prints, and the event permission names the source and detail-type the
  code publishes;
- the dashboard's metrics in that namespace are ones the code prints (shared/src/metrics.rs),
  with a dimension set it publishes them under, values of FailureClass and State it prints
  and a function that prints them; every metric it prints, every failure class and stale
  state, every SQS queue of the template and every function's Lambda errors are shown;
- what EventBridge delivers to a function is what its code reads: a rule's detail-types
  are those the function handles, a schedule's input is a tick the function accepts;
  each such rule and schedule has a retry policy, a dead-letter queue and (a rule) the
  permission to invoke and to dead-letter, and the function its own dead-letter queue
  for failed invocations; every dead-letter queue has an alarm;
- reconcile's timeout leaves room for its pass besides following pods;
- each function's Kubernetes access: the verbs its code uses (the KubeCluster requests of
  the Cluster methods it reaches, itself or through the services, Submitter and Attempts)
  are those of RBAC_NEEDS, rbac.yaml binds the function's own group
  (<KubernetesGroup>-<function>) to a Role granting exactly those, and the template's
  access entry maps the function's role to that group;
- the stack's bus denies source podbridge and detail-type Job State Change to every
  principal but the roles that publish;
- infra/team-queue.yaml delivers to dispatch as JobQueue does (the same visibility
  mapping and queue parameters, partial batch responses, the same read grant), and its
  queue policy, as JobQueue's when it has one, lets only the senders send;
- infra/admission-policy.yaml matches podbridge's label and the functions' groups,
  infra/job-namespace.yaml enforces Pod Security restricted, and docs/DEPLOY.md shows
  both exactly as they are;
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
RBAC_NODES = ROOT / "infra/rbac-nodes.yaml"
TEAM_QUEUE = ROOT / "infra/team-queue.yaml"
ADMISSION_POLICY = ROOT / "infra/admission-policy.yaml"
JOB_NAMESPACE = ROOT / "infra/job-namespace.yaml"
DEPLOY_DOC = ROOT / "docs/DEPLOY.md"
SAMCONFIG = ROOT / "samconfig.toml"

# The Rust side. shared/ (crate podbridge) holds the adapters and services, core/
# (podbridge-core) the pure domain; both are in every function.
SHARED_SRC = ROOT / "shared/src"
CORE_SRC = ROOT / "core/src"
SETTINGS = SHARED_SRC / "settings.rs"  # every PODBRIDGE_* variable, read for every function
POD_RS = CORE_SRC / "pod.rs"  # MANAGED_BY, the label of every managed pod
# The cluster port: the Cluster trait (mod.rs) and its adapters. kube.rs (KubeCluster) is
# the only code that builds Kubernetes API handles; memory.rs is an in-memory fake that
# makes no Kubernetes requests.
CLUSTER_DIR = SHARED_SRC / "cluster"
CLUSTER_PORT = CLUSTER_DIR / "mod.rs"
KUBE_ADAPTER = CLUSTER_DIR / "kube.rs"
CLUSTER_ADAPTERS = {KUBE_ADAPTER, CLUSTER_DIR / "memory.rs"}
# The services, the only shared code that calls the cluster, by the type each file
# defines; the functions hold them by the type's name in lower case (`submitter`,
# `attempts`, a field or an accessor).
SERVICES = {
    "Submitter": SHARED_SRC / "services/submit.rs",
    "Attempts": SHARED_SRC / "services/attempts.rs",
}

# The Kubernetes access each function needs, in its job namespaces (docs/DEPLOY.md):
# resource -> verbs. check_rbac derives the same from the code (the KubeCluster methods a
# function reaches, and the API requests each makes) and fails when the code uses more or
# less than this, or when infra/rbac.yaml grants other than this: a new verb is granted on
# purpose, here and in rbac.yaml together, never by accident.
RBAC_NEEDS = {
    # A job's pod; get reads back its own pod after a 409; delete for cancel messages and
    # for a pod created for a job cancelled meanwhile.
    "dispatch": {"pods": {"create", "get", "delete"}},
    # Retries and re-dispatch (create, get), the pass's LIST, the watch that follows pods,
    # cleanup (delete), and a pod's events (FailedMount).
    "reconcile": {"pods": {"create", "get", "list", "watch", "delete"}, "events": {"list"}},
    # Submit and Retry Job events and ticks (create, get), Cancel Job and the replace policy.
    "trigger": {"pods": {"create", "get", "delete"}},
}

# The kube::Api methods behind each verb of a KubeCluster request.
KUBE_METHODS = {
    "create": {"create"},
    "get": {"get", "get_opt"},
    "list": {"list"},
    "watch": {"watch"},
    "delete": {"delete"},
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


def rust_file(path: Path) -> str:
    """One Rust file without its tests."""
    return path.read_text().split("#[cfg(test)]", 1)[0]


def without_comment_lines(source: str) -> str:
    """`source` without its comment lines (`//`, `///`, `//!`): what it says of other code
    is not what it does."""
    return re.sub(r"^[ \t]*//[^\n]*$", "", source, flags=re.M)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


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
    """`shared_src`: the Rust source every function holds (shared/ and core/)."""
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
            problem(f"{logical_id}: the template sets {name}, which no code of {crate}, shared/ or core/ reads")

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
    source = (SHARED_SRC / "store/dynamodb.rs").read_text()
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

    indexes = re.findall(r'index\((\w+), "(\w+)", "(\w+)"\)', table_part)
    projection = re.search(r"ProjectionType::(\w+)", index_part)
    billing = re.search(r"BillingMode::(\w+)", table_part)
    ttl = re.search(r"TimeToLiveSpecification::builder\(\)\.attribute_name\((\w+)\)", body)
    if not (indexes and projection and billing and ttl and "ScalarAttributeType::S" in body):
        problem("shared/src/store/dynamodb.rs: create_table no longer reads as expected (update consistency.py)")
        return
    want = {
        "BillingMode": upper_snake(billing.group(1)),
        "AttributeDefinitions": sorted(re.findall(r'string_attr\("(\w+)"\)', table_part)),
        "KeySchema": keys(table_part),
        "GlobalSecondaryIndexes": [
            {
                "IndexName": consts.get(name),
                "KeySchema": [{"AttributeName": hash_key, "KeyType": "HASH"},
                              {"AttributeName": range_key, "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": upper_snake(projection.group(1))},
            }
            for name, hash_key, range_key in indexes
        ],
        "TimeToLiveSpecification": {"AttributeName": consts.get(ttl.group(1)), "Enabled": True},
    }
    # Query is granted on the job table's indexes by name, or on the queue table (whose
    # items are read by key), never on the job table itself (a Query there is a mistake).
    index_arns = {f"${{JobTable.Arn}}/index/{index['IndexName']}" for index in want["GlobalSecondaryIndexes"]}
    for logical_id, statement in iam_statements(raw):
        resource = statement["Resource"]
        arn = resource.get("Fn::Sub", "") if isinstance(resource, dict) else resource
        if "dynamodb:Query" in statement["Action"] and arn not in index_arns and getatt(resource) != ("QueueTable", "Arn"):
            problem(f"{logical_id}: dynamodb:Query is granted on {resource!r}, not on an index or the queue table")
    table = raw["Resources"]["JobTable"]["Properties"]
    have = dict(table, AttributeDefinitions=sorted(a["AttributeName"] for a in table["AttributeDefinitions"]))
    if any(a["AttributeType"] != "S" for a in table["AttributeDefinitions"]):
        problem("JobTable: every key attribute is a string (S) in create_table")
    for key, value in want.items():
        if have.get(key) != value:
            problem(f"JobTable.{key} is {have.get(key)!r}, create_table makes {value!r}")


REPORT_RS = ROOT / "functions/reconcile/src/report.rs"  # the reconciler's own figures


class Emitted:
    """A metric the functions print (shared/src/metrics.rs): its name, the enum variant
    code counts it with (`Counter::X`, `Timing::X`; None for the per-queue figures), the
    dimension sets it is published under, and the values each dimension besides
    `Function` and `Queue` can take."""

    def __init__(self, name: str, kind: str, variant: str | None, dimension_sets: list[tuple[str, ...]],
                 values: dict[str, set[str]]) -> None:
        self.name, self.kind, self.variant = name, kind, variant
        self.dimension_sets, self.values = dimension_sets, values


def enum_strings(type_name: str) -> set[str] | None:
    """The `as_str` values of `pub enum {type_name}` in core/src, or None."""
    for path in sorted(CORE_SRC.rglob("*.rs")):
        source = rust_file(path)
        if re.search(rf"pub enum {type_name}\b", source):
            body = re.search(r"fn as_str\(self\) -> &'static str \{(.*?)\n    \}", source, re.S)
            return set(re.findall(r'Self::\w+ => "([^"]+)"', body.group(1))) if body else None
    return None


def stale_states() -> set[str] | None:
    """The states the reconciler counts StaleFound under: those `record_metrics` and
    `stuck_in` (functions/reconcile/src/report.rs) name."""
    fns = rust_fns(rust_file(REPORT_RS))
    states = enum_strings("JobState") or set()
    named = set()
    for name in ("record_metrics", "stuck_in"):
        named |= set(re.findall(r"JobState::(\w+)", fns.get(name, "")))
    # JobState::SettingUp is printed as setting_up.
    printed = {re.sub(r"(?<!^)(?=[A-Z])", "_", variant).lower() for variant in named}
    return printed if named and printed <= states else None


# Dimension values narrower than their type's: (metric, dimension) -> how to derive them.
NARROWER_VALUES = {("StaleFound", "State"): stale_states}


def emitted_metrics(shared_src: str) -> dict[str, Emitted]:
    """Every metric shared/src/metrics.rs prints, read from its Counter and Timing enums,
    their `name()` and `dimension()`, and the per-queue document `render` writes."""
    source = rust_file(SHARED_SRC / "metrics.rs")
    function = rust_const(shared_src, "FUNCTION")
    counter_enum = re.search(r"pub enum Counter \{(.*?)\n\}", source, re.S)
    counter_impl = re.search(r"impl Counter \{(.*?)\n\}\n", source, re.S)
    timing_impl = re.search(r"impl Timing \{(.*?)\n\}\n", source, re.S)
    queue_dimension = re.search(r'Some\(\("(\w+)", queue\.as_str\(\)\)\)', source)
    if not (function and counter_enum and counter_impl and timing_impl and queue_dimension):
        problem(f"{rel(SHARED_SRC / 'metrics.rs')}: Counter, Timing or the queue document not found "
                "(update consistency.py)")
        return {}
    payloads = dict(re.findall(r"^\s*(\w+)\((\w+)\),$", counter_enum.group(1), re.M))
    extra = {variant: dim for variant, dim in
             re.findall(r'Self::(\w+)\(\w+\) => Some\(\("(\w+)", \w+\.as_str\(\)\)\)', counter_impl.group(1))}
    metrics: dict[str, Emitted] = {}
    for variant, name in re.findall(r'Self::(\w+)(?:\(_\))? => "(\w+)"', counter_impl.group(1)):
        sets, values = [(function,)], {}
        if variant in extra:
            dim = extra[variant]
            sets.insert(0, (function, dim))
            derive = NARROWER_VALUES.get((name, dim))
            found = derive() if derive else enum_strings(payloads.get(variant, ""))
            if not found:
                problem(f"the values of {name}'s dimension {dim} not found in the code (update consistency.py)")
            values[dim] = found or set()
        metrics[name] = Emitted(name, "Counter", variant, sets, values)
    for variant, name in re.findall(r'Self::(\w+) => "(\w+)"', timing_impl.group(1)):
        metrics[name] = Emitted(name, "Timing", variant, [(function,)], {})
    for name in re.findall(r'\("(\w+)", "(?:Count|Seconds)", json!\(figures\.', source):
        metrics[name] = Emitted(name, "queue", None, [(function, queue_dimension.group(1)), (function,)], {})
    return metrics


def prints(function: str, metric: Emitted, shared_src: str) -> bool:
    """Whether the function under functions/ may print `metric`: it (or shared/, which every
    function holds) counts it, or, for the queues' figures, it records them."""
    source = rust_sources(ROOT / "functions" / function / "src")
    if metric.kind == "queue":
        return "metrics.queue(" in source
    return f"{metric.kind}::{metric.variant}" in source + shared_src


NAMESPACE_VARIABLE = "PODBRIDGE_METRICS_NAMESPACE"


def functions_namespace(raw: dict):
    """The template expression every function gets as its metrics namespace (Globals)."""
    variables = raw.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    return variables.get(NAMESPACE_VARIABLE)


def check_metrics_and_events(raw: dict, cfn: dict, shared_src: str, metrics: dict[str, Emitted]) -> None:
    # The functions print under PODBRIDGE_METRICS_NAMESPACE; the alarms on their metrics
    # must name the very same value (the same template expression).
    variable, namespace = NAMESPACE_VARIABLE, functions_namespace(raw)
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
    for logical_id, resource in raw["Resources"].items():
        props = resource["Properties"]
        if resource["Type"] != "AWS::CloudWatch::Alarm" or str(props["Namespace"]).startswith("AWS/"):
            continue
        if props["Namespace"] != namespace:
            problem(f"{logical_id}: namespace {props['Namespace']!r}, the functions print under {namespace!r}")
        metric = metrics.get(props["MetricName"])
        if metric is None:
            problem(f"{logical_id}: no metric {props['MetricName']!r} in shared/src/metrics.rs")
        for dim in props.get("Dimensions", []):
            function_src = ROOT / "functions" / dim["Value"] / "src"
            if dim["Name"] != dimension or not function_src.is_dir():
                problem(f"{logical_id}: dimension {dim} is not {dimension}=<a function under functions/>")
            elif metric and not prints(dim["Value"], metric, shared_src):
                what = "prints the queues' figures" if metric.kind == "queue" else f"counts {metric.name}"
                problem(f"{logical_id}: {dim['Value']} never {what}")

    source = rust_const(shared_src, "SOURCE")
    detail_type = rust_const(shared_src, "DETAIL_TYPE")
    for logical_id, statement in iam_statements(raw):
        if statement["Action"] == "events:PutEvents":
            condition = statement.get("Condition", {}).get("StringEquals", {})
            if condition != {"events:source": source, "events:detail-type": detail_type}:
                problem(f"{logical_id}: PutEvents must be limited to source {source!r}, {detail_type!r}")


# What a dashboard's !Sub resolves to where the check needs a stand-in: the functions'
# namespace, and the region (a widget must show the stack's own).
NAMESPACE_MARK = "<functions-namespace>"
REGION_MARK = "<AWS::Region>"
STATISTIC = re.compile(r"SampleCount|Average|Sum|Minimum|Maximum|p\d{1,2}(\.\d+)?|p100")


def resolve_sub(raw: dict, value, namespace, where: str) -> str | None:
    """The text of `value` (a !Sub) as CloudFormation would make it, with stand-ins for
    what only a deployment knows: a variable or parameter that holds the functions'
    namespace becomes NAMESPACE_MARK, `${X.Attr}` `<GetAtt:X.Attr>`, `${X}` of a resource
    `<Ref:X>`, a Number parameter its default."""
    if not (isinstance(value, dict) and "Fn::Sub" in value):
        problem(f"{where}: must be a !Sub (or Fn::Sub with variables) of the JSON body")
        return None
    sub = value["Fn::Sub"]
    text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in variables:
            return NAMESPACE_MARK if variables[name] == namespace else f"<var:{name}>"
        if name == "AWS::Region":
            return REGION_MARK
        if name.startswith("AWS::"):
            return f"<{name}>"
        logical_id, _, attribute = name.partition(".")
        if attribute:
            if logical_id not in raw["Resources"]:
                problem(f"{where}: ${{{name}}} names no resource of the template")
            return f"<GetAtt:{name}>"
        if logical_id in raw["Resources"]:
            return f"<Ref:{logical_id}>"
        parameter = raw["Parameters"].get(logical_id)
        if parameter is None:
            problem(f"{where}: ${{{name}}} is no parameter, resource or variable of the !Sub")
            return f"<{name}>"
        if parameter["Type"] == "Number" and "Default" in parameter:
            return str(parameter["Default"])
        return f"<Ref:{logical_id}>"

    return re.sub(r"\$\{([^}]*)\}", replace, text)


def search_series(expression: str, where: str) -> list[tuple[str, dict, str]]:
    """(namespace, {dimension: value or None}, metric name) of each SEARCH in `expression`:
    its schema's dimensions, each None unless an exact `Dim="value"` of the search term
    fixes it. Only exact designators are understood; anything else is a problem."""
    found = []
    for schema, term, stat in re.findall(r"SEARCH\('\s*\{([^}]*)\}([^']*)',\s*'([^']*)'", expression):
        names = [quoted or bare for quoted, bare in re.findall(r'\s*(?:"([^"]*)"|([^,"\s]+))\s*,?', schema)]
        designators = dict(re.findall(r'(\w+)="([^"]*)"', term))
        if re.sub(r'\w+="[^"]*"', "", term).strip():
            problem(f"{where}: SEARCH term {term.strip()!r}: use only exact designators (Name=\"value\")")
        if not STATISTIC.fullmatch(stat):
            problem(f"{where}: SEARCH statistic {stat!r} is not a CloudWatch statistic")
        metric = designators.pop("MetricName", None)
        if not names or metric is None:
            problem(f"{where}: SEARCH('{{{schema}}}{term}') needs a schema {{namespace,...}} and MetricName=\"...\"")
            continue
        dims = {name: None for name in names[1:]}
        for name, value in designators.items():
            if name not in dims:
                problem(f"{where}: SEARCH filters on {name}, which its schema {{{schema}}} does not have")
            dims[name] = value
        found.append((names[0], dims, metric))
    if "SEARCH(" in expression and not found:
        problem(f"{where}: a SEARCH the check cannot read: {expression}")
    return found


def check_dashboard(raw: dict, shared_src: str, metrics: dict[str, Emitted], namespace) -> None:
    """The stack's dashboard shows what the code prints, as the code prints it: every metric
    of the functions' namespace is one of shared/src/metrics.rs with a dimension set it is
    published under, dimension values the code prints and a function that prints it; every
    metric the code prints, every value of its FailureClass or State, every SQS queue of
    the template and every function's Lambda errors have a series."""
    resources = raw["Resources"]
    dashboards = [(k, r) for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    if len(dashboards) != 1:
        problem(f"the template needs exactly one AWS::CloudWatch::Dashboard, has {len(dashboards)}")
        return
    logical_id, resource = dashboards[0]
    props = resource["Properties"]
    name = props.get("DashboardName")
    if not (isinstance(name, dict) and "${AWS::StackName}" in str(name.get("Fn::Sub"))):
        problem(f"{logical_id}: DashboardName must be a !Sub of ${{AWS::StackName}}, one dashboard per stack")
    url = raw.get("Outputs", {}).get("DashboardUrl", {}).get("Value", {})
    if not (isinstance(url, dict) and "#dashboards/dashboard/${" + logical_id + "}" in str(url.get("Fn::Sub"))
            and "region=${AWS::Region}" in str(url.get("Fn::Sub"))):
        problem(f"Outputs.DashboardUrl: must be the console URL of {logical_id} (region=${{AWS::Region}}, "
                f"#dashboards/dashboard/${{{logical_id}}})")
    text = resolve_sub(raw, props.get("DashboardBody"), namespace, f"{logical_id}.DashboardBody")
    if text is None:
        return
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        problem(f"{logical_id}.DashboardBody: not JSON once substituted ({error})")
        return

    functions = {p.name for p in (ROOT / "functions").iterdir() if (p / "Cargo.toml").exists()}
    function_ids = {k for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    queue_ids = {k for k, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    ours: list[tuple[str, dict, str]] = []  # (where, dimensions, metric) in the functions' namespace
    sqs_shown, errors_shown = set(), set()
    for number, widget in enumerate(body.get("widgets", []), 1):
        widget_props = widget.get("properties", {})
        where = f"{logical_id} widget {number} ({widget_props.get('title', 'untitled')})"
        if widget.get("type") != "metric":
            continue
        if widget_props.get("region") != REGION_MARK:
            problem(f"{where}: region must be ${{AWS::Region}}, the stack's own")
        series = []
        for row in widget_props.get("metrics", []):
            if row and isinstance(row[0], dict):
                series += search_series(row[0].get("expression", ""), where)
                continue
            names = [item for item in row if isinstance(item, str)]
            options = row[-1] if row and isinstance(row[-1], dict) else {}
            if any(item in (".", "...") for item in names) or len(names) < 2 or len(names) % 2:
                problem(f"{where}: write each metric out in full (namespace, name, dimension pairs): {row}")
                continue
            if "stat" in options and not STATISTIC.fullmatch(options["stat"]):
                problem(f"{where}: statistic {options['stat']!r} is not a CloudWatch statistic")
            series.append((names[0], dict(zip(names[2::2], names[3::2])), names[1]))
        for metric_namespace, dims, metric_name in series:
            if metric_namespace == NAMESPACE_MARK:
                ours.append((where, dims, metric_name))
            elif metric_namespace == "AWS/SQS":
                ref = re.fullmatch(r"<GetAtt:(\w+)\.QueueName>", str(dims.get("QueueName")))
                if list(dims) != ["QueueName"] or not ref or ref.group(1) not in queue_ids:
                    problem(f"{where}: AWS/SQS {metric_name} must name a queue of the template "
                            f"(QueueName ${{Queue.QueueName}}), not {dims}")
                elif metric_name == "ApproximateNumberOfMessagesVisible":
                    sqs_shown.add(ref.group(1))
            elif metric_namespace == "AWS/Lambda":
                ref = re.fullmatch(r"<Ref:(\w+)>", str(dims.get("FunctionName")))
                if list(dims) != ["FunctionName"] or not ref or ref.group(1) not in function_ids:
                    problem(f"{where}: AWS/Lambda {metric_name} must name a function of the template "
                            f"(FunctionName ${{Function}}), not {dims}")
                elif metric_name == "Errors":
                    errors_shown.add(ref.group(1))
            elif not metric_namespace.startswith("AWS/"):
                problem(f"{where}: namespace {metric_namespace!r} is not the functions' (a !Sub variable set to "
                        f"{namespace!r}, as PODBRIDGE_METRICS_NAMESPACE) nor an AWS one")

    shown: dict[str, list[dict]] = {}
    for where, dims, metric_name in ours:
        metric = metrics.get(metric_name)
        if metric is None:
            problem(f"{where}: no metric {metric_name!r} in shared/src/metrics.rs (it prints {sorted(metrics)})")
            continue
        shown.setdefault(metric_name, []).append(dims)
        if tuple(sorted(dims)) not in {tuple(sorted(s)) for s in metric.dimension_sets}:
            problem(f"{where}: {metric_name} has the dimensions {sorted(dims)}; the code publishes it under "
                    f"{[list(s) for s in metric.dimension_sets]}")
            continue
        for dim, value in dims.items():
            if value is None:
                continue
            if dim == "Function":
                if value not in functions or not prints(value, metric, shared_src):
                    problem(f"{where}: {metric_name} with Function={value}: no function of that name prints it")
            elif dim in metric.values and value not in metric.values[dim]:
                problem(f"{where}: {metric_name} with {dim}={value!r}: the code prints {dim} only as "
                        f"{sorted(metric.values[dim])}")

    for metric_name, metric in sorted(metrics.items()):
        if metric_name not in shown:
            problem(f"{logical_id}: no widget shows {metric_name}, which the code prints (every metric of "
                    "shared/src/metrics.rs has a series on the dashboard)")
            continue
        for dim, values in metric.values.items():
            with_dim = [d for d in shown[metric_name] if dim in d]
            if any(d[dim] is None for d in with_dim):
                continue  # a SEARCH over every value
            missing = values - {d[dim] for d in with_dim}
            if missing:
                problem(f"{logical_id}: {metric_name} is shown for no {dim} {sorted(missing)}; the code prints them")
    for queue in sorted(queue_ids - sqs_shown):
        problem(f"{logical_id}: no widget shows ApproximateNumberOfMessagesVisible of {queue}")
    for function in sorted(function_ids - errors_shown):
        problem(f"{logical_id}: no widget shows the AWS/Lambda Errors of {function}")


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

    check_dead_letter_alarms(resources, dead_letter_queues)


def check_dead_letter_alarms(resources: dict, dead_letter_queues: set[str], where: str = "") -> None:
    """Every dead-letter queue (named, or a queue's redrive target) has an alarm."""
    queues = set(dead_letter_queues)
    for resource in resources.values():
        if resource["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in resource["Properties"]:
            ref = getatt(resource["Properties"]["RedrivePolicy"].get("deadLetterTargetArn"))
            if ref:
                queues.add(ref[0])
    for queue in sorted(queues):
        watched = any(
            r["Type"] == "AWS::CloudWatch::Alarm"
            and r["Properties"].get("Namespace") == "AWS/SQS"
            and r["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
            and getatt(r["Properties"].get("Dimensions", [{}])[0].get("Value")) == (queue, "QueueName")
            for r in resources.values()
        )
        if not watched:
            problem(f"{where}{queue}: a dead-letter queue without an alarm on ApproximateNumberOfMessagesVisible")


# Seconds of a reconcile invocation left for the pass, besides the watch and the margin.
PASS_BUDGET = 30


def check_reconcile_timeout(raw: dict) -> None:
    """Reconcile follows pods for PODBRIDGE_FOLLOW_SECONDS after its pass, until its margin
    before the deadline: its timeout must leave room for the pass."""
    follow = re.search(r"const DEFAULT_FOLLOW: Duration = Duration::from_secs\((\d+)\);", rust_file(SETTINGS))
    reconcile_src = ROOT / "functions/reconcile/src"
    margins = set(re.findall(r"const DEADLINE_MARGIN: Duration = Duration::from_secs\((\d+)\);",
                             rust_sources(reconcile_src)))
    if not follow:
        problem(f"{rel(SETTINGS)}: the PODBRIDGE_FOLLOW_SECONDS default not found (update consistency.py)")
    if len(margins) != 1:
        problem(f"{rel(reconcile_src)}: DEADLINE_MARGIN not found, or found twice (update consistency.py)")
    if not (follow and len(margins) == 1):
        return
    margin = int(margins.pop())
    parameters = raw["Parameters"]

    def fits(where: str, timeout: str, follow_seconds: str) -> None:
        follow_for = int(follow_seconds or follow.group(1))
        if int(timeout) < follow_for + margin + PASS_BUDGET:
            problem(
                f"{where}: ReconcileTimeout {timeout} leaves less than {PASS_BUDGET} s for the pass besides "
                f"FollowSeconds ({follow_for}) and the {margin} s margin"
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


def rust_fns(source: str) -> dict[str, str]:
    """Each `fn NAME` of `source` with its text, up to the next `fn` (the texts of fns of
    the same name, in different impl blocks, together)."""
    parts = re.split(r"\bfn (\w+)\b", source)
    fns: dict[str, str] = {}
    for i in range(1, len(parts) - 1, 2):
        fns[parts[i]] = fns.get(parts[i], "") + parts[i + 1]
    return fns


def cluster_requests() -> dict[str, set[tuple[str, str]]]:
    """The Kubernetes requests of each `Cluster` method (shared/src/cluster/mod.rs), as
    KubeCluster makes them (shared/src/cluster/kube.rs): (resource, verb) from each
    `self.call("VERB NOUN", api.METHOD(...))`."""
    port = rust_file(CLUSTER_PORT)
    source = rust_file(KUBE_ADAPTER)
    trait = re.search(r"pub trait Cluster\b.*?\n}\n", port, re.S)
    imp = re.search(r"impl Cluster for KubeCluster \{.*?\n}\n", source, re.S)
    if not trait:
        problem(f"{rel(CLUSTER_PORT)}: no Cluster trait (update consistency.py)")
    if not imp:
        problem(f"{rel(KUBE_ADAPTER)}: no KubeCluster impl of Cluster (update consistency.py)")
    if not (trait and imp):
        return {}
    kinds = set(re.findall(r"\bApi(?:::)?<(\w+)>", without_comment_lines(source)))
    if kinds - {"Pod", "Event", "Node"}:
        problem(f"{rel(KUBE_ADAPTER)} uses Api<{sorted(kinds - {'Pod', 'Event', 'Node'})}>: add its verbs to RBAC_NEEDS")
    bodies = rust_fns(imp.group(0))
    requests: dict[str, set[tuple[str, str]]] = {}
    for method in re.findall(r"\bfn (\w+)", trait.group(0)):
        body = bodies.get(method, "")
        calls = re.findall(r'\.call\(\s*"(\w+) (\w+)",\s*(.*?)\)\s*\.await', body, re.S)
        if not calls:
            problem(f"KubeCluster::{method}: no self.call(\"VERB NOUN\", ...) found (update consistency.py)")
        found = set()
        for verb, noun, expression in calls:
            resource = {"pod": "pods", "pods": "pods", "event": "events", "events": "events",
                        "nodes": "nodes"}.get(noun)
            methods = re.findall(r"\.(\w+)\(", expression)
            if resource is None or verb not in KUBE_METHODS or not set(methods) & KUBE_METHODS[verb]:
                problem(f"KubeCluster::{method}: request {verb!r} {noun!r} ({expression.strip()}) has no known verb")
                continue
            if noun.rstrip("s") not in expression:
                problem(f"KubeCluster::{method}: request {verb} {noun} is made on {expression.strip()}")
            found.add((resource, verb))
        requests[method] = found
    return requests


def service_calls(requests: dict[str, set[tuple[str, str]]]) -> dict[tuple[str, str], set]:
    """What each method of the services calls: (service, method) -> the Cluster methods
    it calls on its cluster handle, and the (service, method)s it calls on itself or on
    another service (`self.attempts.start(...)`, `self.attempts().delete_pod(...)`)."""
    calls: dict[tuple[str, str], set] = {}
    for service, path in SERVICES.items():
        source = rust_file(path)
        if not re.search(rf"\bpub struct {service}\b", source):
            problem(f"{rel(path)}: no pub struct {service} (update SERVICES in consistency.py)")
        methods = rust_fns(source)
        for name, body in methods.items():
            out: set = {m for m in requests if re.search(rf"\bcluster(?:\(\))?\.{m}\(", body)}
            out |= {(service, m) for m in re.findall(r"\bself\.(\w+)\(", body) if m in methods}
            for other in SERVICES:
                out |= {(other, m) for m in re.findall(rf"\b{other.lower()}(?:\(\))?\.(\w+)\(", body)}
            calls[(service, name)] = out
    return calls


def function_rbac(crate_dir: Path, requests: dict[str, set[tuple[str, str]]],
                  calls: dict[tuple[str, str], set]) -> dict[str, set[str]]:
    """resource -> verbs a function's code uses: the Cluster methods it calls itself, and
    those the services' methods it calls reach (followed through the services' own calls)."""

    def reached(item: tuple[str, str], seen: set) -> set[str]:
        if item in seen:
            return set()
        seen.add(item)
        out = set()
        for callee in calls.get(item, set()):
            out |= reached(callee, seen) if isinstance(callee, tuple) else {callee}
        return out

    source = rust_sources(crate_dir / "src")
    used = {m for m in requests if re.search(rf"\.{m}\(", source)}
    for service in SERVICES:
        for name in set(re.findall(rf"\b{service.lower()}(?:\(\))?\.(\w+)\(", source)):
            used |= reached((service, name), set())
    verbs: dict[str, set[str]] = {}
    for method in used:
        for resource, verb in requests[method]:
            verbs.setdefault(resource, set()).add(verb)
    return verbs


def check_rbac(raw: dict) -> None:
    """Each function's Kubernetes group: the template maps its role to it, rbac.yaml binds
    it to a Role with exactly the verbs of RBAC_NEEDS, and the code uses exactly those."""
    requests = cluster_requests()
    calls = service_calls(requests)
    # Only the services (SERVICES: shared/src/services/submit.rs, attempts.rs) and the
    # functions themselves call the cluster, and only shared/src/cluster/kube.rs builds
    # Kubernetes API handles: else the derivation below misses requests. The cluster's
    # adapters implement its methods rather than call them; the in-memory one
    # (shared/src/cluster/memory.rs) must build no API handle either.
    services = set(SERVICES.values())
    paths = [p for d in (SHARED_SRC, CORE_SRC) for p in sorted(d.rglob("*.rs"))]
    paths += sorted((ROOT / "functions").glob("*/src/**/*.rs"))
    for path in paths:
        text = without_comment_lines(rust_file(path))
        where = rel(path)
        if path != KUBE_ADAPTER and re.search(r"\bApi(?:<|::)", text):
            problem(f"{where}: builds Kubernetes API handles outside {rel(KUBE_ADAPTER)} (update consistency.py)")
        if path.is_relative_to(ROOT / "functions") or path in services | CLUSTER_ADAPTERS:
            continue
        for method in requests:
            if re.search(rf"\.{method}\(", text):
                problem(f"{where}: calls Cluster::{method} outside the services "
                        f"({', '.join(rel(p) for p in SERVICES.values())}) (update consistency.py)")

    prefix = raw["Parameters"]["KubernetesGroup"]["Default"]
    resources = raw["Resources"]
    functions = {}
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::Serverless::Function":
            crate_dir = (TEMPLATE.parent / resource["Properties"]["CodeUri"]).resolve()
            functions[crate_dir.name] = (logical_id, crate_dir)
    if set(functions) != set(RBAC_NEEDS):
        problem(f"RBAC_NEEDS has {sorted(RBAC_NEEDS)}, the template deploys {sorted(functions)}")

    documents = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    roles = {d["metadata"]["name"]: d for d in documents if d.get("kind") == "Role"}
    bindings = [d for d in documents if d.get("kind") == "RoleBinding"]
    for doc in documents:
        if doc.get("kind") not in ("Role", "RoleBinding"):
            problem(f"rbac.yaml: a {doc.get('kind')}; only namespaced Roles and RoleBindings belong there")
        if "namespace" in doc.get("metadata", {}):
            problem("rbac.yaml must not name a namespace: it is applied with -n to every job namespace")
    bound_roles = set()
    nodes_readers: set[str] = set()

    for name, (logical_id, crate_dir) in sorted(functions.items()):
        need = RBAC_NEEDS.get(name, {})
        used = function_rbac(crate_dir, requests, calls)
        # Reading nodes is cluster-wide, so it is not rbac.yaml's: infra/rbac-nodes.yaml
        # grants it, optionally (without it, only the LargestNode* parameters count).
        if used.pop("nodes", None) is not None:
            nodes_readers.add(f"{prefix}-{name}")
        if used != need:
            problem(
                f"{crate_dir.relative_to(ROOT)} uses {sorted((r, sorted(v)) for r, v in used.items())} in the "
                f"cluster, RBAC_NEEDS says {sorted((r, sorted(v)) for r, v in need.items())}: update RBAC_NEEDS "
                "and infra/rbac.yaml together"
            )
        group = f"{prefix}-{name}"
        sub = {"Fn::Sub": f"${{KubernetesGroup}}-{name}"}

        role_ref = getatt(resources[logical_id]["Properties"].get("Role"))
        entries = [
            (k, r)
            for k, r in resources.items()
            if r["Type"] == "AWS::EKS::AccessEntry"
            and role_ref
            and getatt(r["Properties"].get("PrincipalArn")) == (role_ref[0], "Arn")
        ]
        if len(entries) != 1:
            problem(f"{logical_id}: needs exactly one AWS::EKS::AccessEntry for its role, has {len(entries)}")
        for entry_id, entry in entries:
            props = entry["Properties"]
            if props.get("KubernetesGroups") != [sub]:
                problem(f"{entry_id}: KubernetesGroups must be [!Sub \"${{KubernetesGroup}}-{name}\"], its own group")
            if entry.get("Condition") != "CreateAccessEntries" or props.get("AccessPolicies"):
                problem(f"{entry_id}: Condition CreateAccessEntries and no AccessPolicies (RBAC is rbac.yaml's)")
        output = raw.get("Outputs", {}).get(f"{logical_id.removesuffix('Function')}KubernetesGroup", {})
        if output.get("Value") != sub:
            problem(f"Outputs: {logical_id.removesuffix('Function')}KubernetesGroup must be {sub}")

        mine = [b for b in bindings if {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}
                in b.get("subjects", [])]
        if len(mine) != 1 or mine[0]["subjects"] != [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}
        ]:
            problem(f"rbac.yaml: the group {group!r} needs exactly one RoleBinding, with it as its only subject")
            continue
        ref = mine[0]["roleRef"]
        role = roles.get(ref["name"]) if ref.get("kind") == "Role" else None
        if role is None:
            problem(f"rbac.yaml: {group}'s RoleBinding refers to {ref}, not a Role of rbac.yaml")
            continue
        bound_roles.add(ref["name"])
        granted: dict[str, set[str]] = {}
        for rule in role.get("rules", []):
            if rule.get("apiGroups") != [""] or rule.get("resourceNames") or rule.get("nonResourceURLs"):
                problem(f"rbac.yaml: Role {ref['name']} has a rule beyond the core API group: {rule}")
            for resource in rule.get("resources", []):
                granted.setdefault(resource, set()).update(rule.get("verbs", []))
        if granted != need:
            problem(
                f"rbac.yaml: Role {ref['name']} ({group}) grants {sorted((r, sorted(v)) for r, v in granted.items())}, "
                f"{name} needs {sorted((r, sorted(v)) for r, v in need.items())}"
            )
    wanted_groups = {f"{prefix}-{name}" for name in functions}
    for binding in bindings:
        for subject in binding.get("subjects", []):
            if subject.get("name") not in wanted_groups:
                problem(f"rbac.yaml: RoleBinding {binding['metadata']['name']} binds {subject}, no function's group")
    for name in sorted(set(roles) - bound_roles):
        problem(f"rbac.yaml: Role {name} is bound to no function's group")

    # infra/rbac-nodes.yaml: one ClusterRole that lists nodes, bound to exactly the groups
    # of the functions whose code reads them.
    nodes = [d for d in yaml.safe_load_all(RBAC_NODES.read_text()) if d]
    cluster_roles = [d for d in nodes if d.get("kind") == "ClusterRole"]
    cluster_bindings = [d for d in nodes if d.get("kind") == "ClusterRoleBinding"]
    if len(cluster_roles) != 1 or len(cluster_bindings) != 1 or len(nodes) != 2:
        problem("rbac-nodes.yaml: exactly one ClusterRole and one ClusterRoleBinding")
        return
    if cluster_roles[0].get("rules") != [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]:
        problem(f"rbac-nodes.yaml: the ClusterRole must grant list on nodes only, grants {cluster_roles[0].get('rules')}")
    subjects = {s_["name"] for s_ in cluster_bindings[0].get("subjects", [])}
    if subjects != nodes_readers:
        problem(f"rbac-nodes.yaml binds {sorted(subjects)}, the code reads nodes in {sorted(nodes_readers)}")


def check_bus_policy(raw: dict, shared_src: str) -> None:
    """The stack's bus denies source podbridge and detail-type Job State Change to every
    principal but the roles that publish."""
    resources = raw["Resources"]
    publishers = sorted(
        str({"Fn::GetAtt": [logical_id, "Arn"]})
        for logical_id, statement in iam_statements(raw)
        if statement["Action"] == "events:PutEvents"
    )
    policies = [(k, r) for k, r in resources.items() if r["Type"] == "AWS::Events::EventBusPolicy"]
    for key, value in [("events:source", rust_const(shared_src, "SOURCE")),
                       ("events:detail-type", rust_const(shared_src, "DETAIL_TYPE"))]:
        denied = [
            (k, r) for k, r in policies
            if r["Properties"]["Statement"].get("Effect") == "Deny"
            and r["Properties"]["Statement"].get("Condition", {}).get("StringEquals") == {key: value}
        ]
        if len(denied) != 1:
            problem(f"the template needs one AWS::Events::EventBusPolicy denying PutEvents with {key} {value!r}")
            continue
        logical_id, resource = denied[0]
        props, statement = resource["Properties"], resource["Properties"]["Statement"]
        exempt = statement["Condition"].get("ArnNotEquals", {}).get("aws:PrincipalArn", [])
        if (statement.get("Principal") != "*" or statement.get("Action") != "events:PutEvents"
                or sorted(map(str, exempt)) != publishers):
            problem(f"{logical_id}: must deny events:PutEvents to * but exactly the roles that publish")
        if (props.get("EventBusName") != {"Ref": "JobEventBus"}
                or getatt(statement.get("Resource")) != ("JobEventBus", "Arn")
                or resource.get("Condition") != "CreateEventBus"):
            problem(f"{logical_id}: must be on JobEventBus (Resource !GetAtt JobEventBus.Arn), when it is created")
    # Statements of one bus policy are changed one at a time.
    for (first, _), (second, resource) in zip(policies, policies[1:]):
        if resource.get("DependsOn") not in (first, [first]):
            problem(f"{second}: must DependsOn {first}, both change the bus's one policy")


def check_send_policy(resources: dict, queue: str, senders: dict, where: str) -> None:
    """A queue policy lets `senders` send and denies sqs:SendMessage to everyone else."""
    policies = [
        r for r in resources.values()
        if r["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": queue} in r["Properties"]["Queues"]
    ]
    statements = [s for r in policies for s in r["Properties"]["PolicyDocument"]["Statement"]]
    arn = {"Fn::GetAtt": [queue, "Arn"]}
    allowed = any(
        s.get("Effect") == "Allow" and s.get("Action") == "sqs:SendMessage" and s.get("Resource") == arn
        and s.get("Condition") == {"ArnLike": {"aws:PrincipalArn": senders}}
        for s in statements
    )
    denied = any(
        s.get("Effect") == "Deny" and s.get("Principal") == "*" and s.get("Action") == "sqs:SendMessage"
        and s.get("Resource") == arn and s.get("Condition") == {"ArnNotLike": {"aws:PrincipalArn": senders}}
        for s in statements
    )
    if not (allowed and denied):
        problem(f"{where}{queue}: its policy must allow sqs:SendMessage to {senders} (ArnLike aws:PrincipalArn) "
                "and deny it to every other principal (ArnNotLike)")


def check_team_queue(raw: dict) -> None:
    """infra/team-queue.yaml: a queue for the stack's dispatch function, set up as JobQueue."""
    team = yaml_parse(TEAM_QUEUE.read_text())
    where = "team-queue.yaml: "
    resources = team["Resources"]
    if team.get("Mappings", {}).get("DispatchTimeouts") != raw["Mappings"]["DispatchTimeouts"]:
        problem(f"{where}the DispatchTimeouts mapping differs from infra/template.yaml's")
    for name in ("DispatchTimeout", "BatchSize", "MaximumBatchingWindowInSeconds", "MaximumConcurrency",
                 "MaxReceiveCount"):
        mine = {k: v for k, v in team["Parameters"].get(name, {}).items() if k != "Description"}
        theirs = {k: v for k, v in raw["Parameters"][name].items() if k != "Description"}
        if mine != theirs:
            problem(f"{where}parameter {name} is {mine}, infra/template.yaml's is {theirs}")

    queues = [k for k, r in resources.items() if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in r["Properties"]]
    mappings = [(k, r) for k, r in resources.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    if len(queues) != 1 or len(mappings) != 1:
        problem(f"{where}expected one queue with a RedrivePolicy and one event source mapping")
        return
    queue, (mapping_id, mapping) = queues[0], mappings[0]
    props = mapping["Properties"]
    if props.get("FunctionResponseTypes") != ["ReportBatchItemFailures"]:
        problem(f"{where}{mapping_id}: FunctionResponseTypes must be ['ReportBatchItemFailures']")
    if getatt(props.get("EventSourceArn")) != (queue, "Arn") or props.get("FunctionName") != {"Ref": "DispatchFunctionArn"}:
        problem(f"{where}{mapping_id}: must deliver {queue} to !Ref DispatchFunctionArn")
    for key in ("BatchSize", "MaximumBatchingWindowInSeconds"):
        if props.get(key) != {"Ref": key}:
            problem(f"{where}{mapping_id}: {key} must be !Ref {key}")
    if props.get("ScalingConfig") != {"MaximumConcurrency": {"Ref": "MaximumConcurrency"}}:
        problem(f"{where}{mapping_id}: ScalingConfig.MaximumConcurrency must be !Ref MaximumConcurrency")

    # The dispatch role reads this queue exactly as it reads JobQueue, and the mapping
    # waits for that grant.
    job_queue = [s["Action"] for r, s in iam_statements(raw)
                 if r == "DispatchRole" and s["Resource"] == {"Fn::GetAtt": ["JobQueue", "Arn"]}]
    grants = [
        (k, s) for k, r in resources.items() if r["Type"] == "AWS::IAM::Policy"
        for s in r["Properties"]["PolicyDocument"]["Statement"]
        if r["Properties"].get("Roles") == [{"Ref": "DispatchRoleName"}]
    ]
    if [s["Action"] for _, s in grants] != job_queue or any(s["Resource"] != {"Fn::GetAtt": [queue, "Arn"]}
                                                             for _, s in grants):
        problem(f"{where}the dispatch role must be granted {job_queue} on {queue}, as on JobQueue, and no more")
    elif mapping.get("DependsOn") not in (grants[0][0], [grants[0][0]]):
        problem(f"{where}{mapping_id}: must DependsOn {grants[0][0]}, or Lambda may find the role without the grant")
    check_send_policy(resources, queue, {"Ref": "SenderPrincipalArns"}, where)
    check_dead_letter_alarms(resources, set(), where)


def check_cluster_manifests(raw: dict) -> None:
    """The admission policy matches podbridge's pods (its label, the functions' groups), the
    job namespace enforces Pod Security restricted, and docs/DEPLOY.md shows both as they are."""
    policy_docs = [d for d in yaml.safe_load_all(ADMISSION_POLICY.read_text()) if d]
    namespace_docs = [d for d in yaml.safe_load_all(JOB_NAMESPACE.read_text()) if d]
    pod_rs = rust_file(POD_RS)
    label = re.search(r'pub const MANAGED_BY: \(&str, &str\) = \("([^"]+)", "([^"]+)"\);', pod_rs)
    prefix = raw["Parameters"]["KubernetesGroup"]["Default"]
    groups = {f"{prefix}-{name}" for name in RBAC_NEEDS}
    policy = next((d for d in policy_docs if d.get("kind") == "ValidatingAdmissionPolicy"), None)
    binding = next((d for d in policy_docs if d.get("kind") == "ValidatingAdmissionPolicyBinding"), None)
    if not (policy and binding and label):
        problem(f"admission-policy.yaml: a ValidatingAdmissionPolicy and its binding, and MANAGED_BY in {rel(POD_RS)}, "
                "expected")
    else:
        conditions = " ".join(c["expression"] for c in policy["spec"].get("matchConditions", []))
        listed = re.search(r"g in \[([^\]]*)\]", conditions)
        named = set(re.findall(r"'([^']+)'", listed.group(1))) if listed else set()
        if named != groups:
            problem(f"admission-policy.yaml: matchConditions name the groups {sorted(named)}, the functions' are "
                    f"{sorted(groups)}")
        for part in label.groups():
            if f"'{part}'" not in conditions:
                problem(f"admission-policy.yaml: matchConditions do not match the label {label.group(1)}={label.group(2)}")
        if binding["spec"].get("policyName") != policy["metadata"]["name"]:
            problem("admission-policy.yaml: the binding names another policy")
    labels = next((d for d in namespace_docs if d.get("kind") == "Namespace"), {}).get("metadata", {}).get("labels", {})
    if labels.get("pod-security.kubernetes.io/enforce") != "restricted" or not labels.get(
            "pod-security.kubernetes.io/enforce-version"):
        problem("job-namespace.yaml: must enforce Pod Security restricted, with its version label")

    shown = {}
    for block in re.findall(r"```yaml\n(.*?)```", DEPLOY_DOC.read_text(), re.S):
        try:
            docs = [d for d in yaml.safe_load_all(block) if isinstance(d, dict) and "kind" in d]
        except yaml.YAMLError:
            continue
        for doc in docs:
            shown[(doc["kind"], doc.get("metadata", {}).get("name"))] = doc
    for doc in policy_docs + namespace_docs:
        key = (doc["kind"], doc["metadata"]["name"])
        if shown.get(key) != doc:
            problem(f"docs/DEPLOY.md: its YAML of {key[0]} {key[1]} differs from infra/ (or is missing)")


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
    shared_src = rust_sources(SHARED_SRC)
    # Every function holds shared/ and core/: what either reads, every function reads.
    check_functions(raw, cfn, shared_src + "\n" + rust_sources(CORE_SRC))
    check_queue(raw)
    check_table(raw)
    metrics = emitted_metrics(shared_src)
    check_metrics_and_events(raw, cfn, shared_src, metrics)
    check_dashboard(raw, shared_src, metrics, functions_namespace(raw))
    check_event_targets(raw)
    check_reconcile_timeout(raw)
    check_rbac(raw)
    check_bus_policy(raw, shared_src)
    if raw["Resources"].get("JobQueuePolicy"):
        check_send_policy(raw["Resources"], "JobQueue", {"Ref": "JobQueueSenderPrincipalArns"}, "")
    check_team_queue(raw)
    check_cluster_manifests(raw)
    check_skips(raw)
    check_samconfig(raw)
    for message in problems:
        print(f"consistency: {message}", file=sys.stderr)
    if problems:
        print(f"consistency: {len(problems)} problem(s) between infra/ and the code", file=sys.stderr)
        return 1
    print("consistency: the templates, the cluster manifests and samconfig.toml agree with the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
