#!/usr/bin/env python3
"""Checks deploy/kubernetes: renders each overlay, validates it, and checks sluice's config in it.

For every overlay under deploy/kubernetes/overlays:
  1. `kubectl kustomize` renders it;
  2. every object is validated against the Kubernetes schemas of K8S_VERSION in strict mode
     (unknown fields fail); the ServiceMonitor (a CRD, no built-in schema) by hand below;
  3. cross-references are checked: Service and ServiceMonitor selectors, named ports, the
     ConfigMap behind --config, drain timing against terminationGracePeriodSeconds;
  4. each ConfigMap's embedded sluice.yaml goes through `sluice check-config`.

Usage: deploy/check.py [SLUICE_BIN]   (or SLUICE_BIN=path/to/sluice deploy/check.py)
Needs PyYAML and kubernetes-validate (ships its schemas: works offline) and kubectl (kustomize v5).
Exit 0: all good; 1: problems (printed); 2: the check itself cannot run.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests support (preStop sleep action)
OVERLAYS = Path(__file__).resolve().parent / "kubernetes" / "overlays"
LOOPBACK = ("127.", "[::1]")

try:
    import yaml
    import kubernetes_validate
except ImportError as e:
    print(f"cannot check: {e.name} is missing; run from a venv with kubernetes-validate and PyYAML")
    sys.exit(2)

problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def fatal(what):
    print(f"cannot check: {what}")
    sys.exit(2)


def seconds(text):
    """A sluice duration (`500ms`, `30s`, `1m30s`) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a duration: {text!r}")
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * unit[u] for n, u in parts)


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_service_monitor(where, sm, services):
    """ServiceMonitor has no schema here: its required fields and what it points at, by hand."""
    spec = sm.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    endpoints = spec.get("endpoints") or []
    if not selector:
        problem(where, "spec.selector.matchLabels is required")
    if not endpoints:
        problem(where, "spec.endpoints needs at least one endpoint")
    targets = [s for s in services if matches(selector, s["metadata"].get("labels") or {})]
    if selector and not targets:
        problem(where, f"selector {selector} matches no Service")
    for i, ep in enumerate(endpoints):
        at = f"{where} endpoints[{i}]"
        unknown = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme",
                             "authorization", "bearerTokenSecret", "tlsConfig", "honorLabels"}
        if unknown:
            problem(at, f"unexpected fields {sorted(unknown)}")
        if not any(p.get("name") == ep.get("port") for s in targets for p in s["spec"]["ports"]):
            problem(at, f"port {ep.get('port')!r} is not a named port of the selected Service")
        for key in ("interval", "scrapeTimeout"):
            if key in ep and not re.fullmatch(r"(\d+(ms|s|m|h))+", str(ep[key])):
                problem(at, f"{key} {ep[key]!r} is not a Prometheus duration")
        if not str(ep.get("path", "/metrics")).startswith("/"):
            problem(at, "path must start with /")
        auth = ep.get("authorization")
        if auth is not None:
            creds = auth.get("credentials") or {}
            if auth.get("type", "Bearer") != "Bearer" or not creds.get("name") or not creds.get("key"):
                problem(at, "authorization needs type Bearer and credentials {name, key}")
            else:
                print(f"  note: {at} needs Secret {creds['name']} (created by hand, see deploy/README.md)")


def check_config(where, data, sluice_bin, tmp):
    """Writes the ConfigMap's files to a directory and runs `sluice check-config` on sluice.yaml."""
    cfg_dir = Path(tempfile.mkdtemp(dir=tmp))
    for name, text in data.items():
        (cfg_dir / name).write_text(text)
    text = data["sluice.yaml"]
    config = yaml.safe_load(text) or {}
    for group, tg in (config.get("target_groups") or {}).items():
        ca = ((tg or {}).get("server_tls") or {}).get("ca_file")
        if ca and PurePosixPath(ca).is_absolute() and not Path(ca).exists():
            # Provided by the image (deploy/Dockerfile), not by this machine.
            standin = stand_in_ca(tmp)
            text = text.replace(str(ca), str(standin))
            print(f"  note: {where} target_groups.{group}.server_tls.ca_file {ca} comes from the "
                  f"image; checked with a stand-in CA")
    (cfg_dir / "sluice.yaml").write_text(text)
    run = subprocess.run([sluice_bin, "check-config", str(cfg_dir / "sluice.yaml")],
                         capture_output=True, text=True)
    out = (run.stdout + run.stderr).strip().replace(str(cfg_dir / "sluice.yaml"), "sluice.yaml")
    if run.returncode != 0:
        problem(where, "sluice check-config failed:\n    " + out.replace("\n", "\n    "))
    else:
        print(f"  ok: {where} sluice check-config: {out}")
    return config


def stand_in_ca(tmp):
    path = Path(tmp) / "stand-in-ca.pem"
    if not path.exists():
        if not shutil.which("openssl"):
            fatal("openssl is needed to make a stand-in CA for server_tls.ca_file")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=stand-in", "-days", "1",
                        "-keyout", os.devnull, "-out", str(path)], check=True, capture_output=True)
    return path


def check_sluice_container(where, pod, c, configmaps, configs):
    """The sluice container agrees with its own config: mount, ports, probes, drain, token."""
    args = c.get("args") or []
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        return problem(where, "args need --config PATH")
    config_path = PurePosixPath(args[args.index("--config") + 1])
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
    volume = next((v for v in pod.get("volumes") or [] if v["name"] == mounts.get(str(config_path.parent))), None)
    cm_name = ((volume or {}).get("configMap") or {}).get("name")
    if cm_name not in configmaps or config_path.name not in configmaps[cm_name]:
        return problem(where, f"--config {config_path} is not a key of a ConfigMap mounted at {config_path.parent}")
    config = configs[cm_name]
    listens = [e.get("listen", "") for e in config.get("endpoints") or []]
    admin = (config.get("admin") or {}).get("listen", "")
    ports = {int(a.rsplit(":", 1)[1]): a for a in listens + [admin] if ":" in a}
    named = {p["name"]: p["containerPort"] for p in c.get("ports") or [] if "name" in p}
    for p in c.get("ports") or []:
        addr = ports.get(p["containerPort"])
        if addr is None:
            problem(where, f"containerPort {p['containerPort']} is not a port sluice listens on")
        elif addr.startswith(LOOPBACK):
            problem(where, f"containerPort {p['containerPort']}: sluice listens on loopback ({addr})")
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = (c.get(kind) or {}).get("httpGet")
        if get:
            port = named.get(get["port"], get["port"])
            if not admin or port != int(admin.rsplit(":", 1)[1]):
                problem(where, f"{kind} port {get['port']} is not the admin port ({admin or 'none'})")
    env = {e["name"] for e in c.get("env") or []}
    token = (config.get("admin") or {}).get("bearer_token_env")
    if token and token not in env:
        problem(where, f"admin.bearer_token_env {token} is not set in the container's env")
    stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    need = stop + seconds(config.get("shutdown_timeout", "30s"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < need:
        problem(where, f"terminationGracePeriodSeconds {grace} < preStop sleep {stop} s + shutdown_timeout {need - stop:g} s")
    else:
        print(f"  ok: {where} drain: preStop {stop} s + shutdown_timeout {need - stop:g} s <= grace {grace} s")


def check_overlay(overlay, sluice_bin, tmp):
    name = overlay.name
    run = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True)
    if run.returncode != 0:
        return problem(name, f"kubectl kustomize failed: {run.stderr.strip()}")
    docs = [d for d in yaml.safe_load_all(run.stdout) if d]
    print(f"{name}: {len(docs)} objects")
    services = [d for d in docs if d["kind"] == "Service"]
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    for d in docs:
        where = f"{name} {d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "ServiceMonitor":
            before = len(problems)
            check_service_monitor(where, d, services)
            if len(problems) == before:
                print(f"  ok: {where} (a CRD without a schema here: fields and references checked by hand)")
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            print(f"  ok: {where} valid for Kubernetes {K8S_VERSION} (strict)")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problem(where, f"invalid for Kubernetes {K8S_VERSION}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problem(where, e.message)
    configs = {cm: check_config(f"{name} ConfigMap/{cm}", data, sluice_bin, tmp)
               for cm, data in configmaps.items() if "sluice.yaml" in data}
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"].get("labels") or {}
        sidecars = [c for c in pod.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
        for c in sidecars + pod["containers"]:
            if c["name"] == "sluice":
                check_sluice_container(f"{name} Deployment/{d['metadata']['name']} sluice", pod, c, configmaps, configs)
        for v in pod.get("volumes") or []:
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                problem(f"{name} Deployment/{d['metadata']['name']}", f"volume {v['name']}: no ConfigMap {v['configMap']['name']}")
        regular = {p["name"] for c in pod["containers"] for p in c.get("ports") or [] if "name" in p}
        for s in services:
            if not matches(s["spec"].get("selector"), labels):
                continue
            for p in s["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                # Named ports of native sidecars reach Services only from Kubernetes 1.32 on.
                if isinstance(target, str) and target not in regular:
                    problem(f"{name} Service/{s['metadata']['name']}", f"targetPort {target!r} is not a named port of a regular container")
    for s in services:
        pods = [d for d in docs if d["kind"] == "Deployment"
                and matches(s["spec"].get("selector"), d["spec"]["template"]["metadata"].get("labels") or {})]
        if not pods:
            problem(f"{name} Service/{s['metadata']['name']}", f"selector {s['spec'].get('selector')} matches no Deployment")


def main():
    sluice_bin = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SLUICE_BIN")
    if not sluice_bin:
        fatal("give the sluice binary as the first argument or in SLUICE_BIN")
    if not (Path(sluice_bin).is_file() and os.access(sluice_bin, os.X_OK)):
        fatal(f"{sluice_bin} is not an executable file")
    if not shutil.which("kubectl"):
        fatal("kubectl is not on PATH (it renders the overlays with `kubectl kustomize`)")
    overlays = sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())
    if not overlays:
        fatal(f"no overlays under {OVERLAYS}")
    with tempfile.TemporaryDirectory(prefix="sluice-deploy-check-") as tmp:
        for overlay in overlays:
            check_overlay(overlay, sluice_bin, tmp)
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"\nall {len(overlays)} overlays ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
