#!/usr/bin/env bash
# Static validation of everything under deploy/ plus Dockerfile, .dockerignore and the compose
# files. No Docker engine and no Kubernetes cluster are needed (none exists on the CI machines):
#
#   hadolint          Dockerfile lint                       shellcheck   shell scripts
#   images            Dockerfile/.dockerignore rules, model seeding run on temporary dirs
#   yamllint          every YAML file (syntax, duplicate keys)
#   compose-schema    docker-compose.yml against the Compose Specification schema
#   compose           + the CPU override, merged as Compose merges; cross-checks
#   k8s-render        kubectl kustomize of the overlays and components (fallback renderer)
#   k8s-schema-1.30   every rendered object against the Kubernetes 1.30 OpenAPI schemas (strict)
#   k8s-schema-1.37   ... and against 1.37
#   k8s-policy        probes, resources, securityContext, selectors, HPA metric names, ...
#   promtool-rules    promtool check rules + promtool test rules (alert unit tests)
#   promtool-config   the compose Prometheus configuration
#   grafana           dashboard JSON, provisioning, metric names; every query parsed by promtool
#   pins-closure      deploy/requirements/*.txt complete, consistent, installable on cp312
#   pins-install      api-cpu.txt + the project wheel installed into a clean Python 3.12 venv
#
# Usage (from anywhere):  bash deploy/validate.sh
# Installs its tools into build/deploy-venv (PyPI) and promtool into build/promtool (Debian);
# idempotent; prints PASS/FAIL per check and exits non-zero when any check fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/build/deploy-venv"
OUT="$ROOT/build/deploy-check"
PROMTOOL_DIR="$ROOT/build/promtool"
TOOLS_REQ="$ROOT/deploy/requirements/validate-tools.txt"
# The images install from PyPI; so do these checks (not from a machine-wide pip mirror config).
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export PYTHONDONTWRITEBYTECODE=1

passed=0
failed=0
failed_names=()
started=$(date +%s)

log() { printf '%s\n' "$*"; }

run_check() {
    # run_check NAME COMMAND...: runs the command, prints its output indented, then PASS/FAIL.
    local name=$1
    shift
    local t0 t1 rc=0 output
    t0=$(date +%s)
    output=$("$@" 2>&1) || rc=$?
    t1=$(date +%s)
    if [ -n "$output" ]; then
        printf '%s\n' "$output" | sed 's/^/    /'
    fi
    if [ "$rc" -eq 0 ]; then
        log "PASS $name ($((t1 - t0))s)"
        passed=$((passed + 1))
    else
        log "FAIL $name ($((t1 - t0))s, exit $rc)"
        failed=$((failed + 1))
        failed_names+=("$name")
    fi
}

# ------------------------------------------------------------------------------------ setup

setup_venv() {
    local py stamp
    py=$(command -v python3)
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        log "deploy/validate.sh needs Python >= 3.11 as python3"
        exit 2
    fi
    stamp="$VENV/.tools-$(sha256sum "$TOOLS_REQ" | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        log "setup: installing validators into ${VENV#"$ROOT"/}"
        rm -rf "$VENV"
        "$py" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip
        "$VENV/bin/pip" install --quiet -r "$TOOLS_REQ"
        touch "$stamp"
    fi
}

setup_promtool() {
    if [ -x "$PROMTOOL_DIR/promtool" ]; then
        return 0
    fi
    if command -v promtool >/dev/null 2>&1; then
        mkdir -p "$PROMTOOL_DIR"
        ln -sf "$(command -v promtool)" "$PROMTOOL_DIR/promtool"
        return 0
    fi
    # Debian's prometheus package carries promtool; extract it instead of installing a server.
    log "setup: extracting promtool from Debian's prometheus package into ${PROMTOOL_DIR#"$ROOT"/}"
    local tmp
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
        apt-get update -qq >/dev/null 2>&1 || true
        (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1)
    fi
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    mkdir -p "$PROMTOOL_DIR"
    cp "$tmp/root/usr/bin/promtool" "$PROMTOOL_DIR/promtool"
    rm -rf "$tmp"
}

find_python312() {
    # a working CPython 3.12 (a pyenv shim named python3.12 may exist and still refuse to run)
    local candidate
    for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12; do
        if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# ----------------------------------------------------------------------------------- checks
# Each check runs as `cmd || rc=$?`, where bash ignores `set -e`: every step below therefore
# ends in `|| return 1`.

check_yaml() {
    "$VENV/bin/yamllint" --strict -c deploy/yamllint.yml \
        docker-compose.yml docker-compose.cpu.yml deploy/
}

check_compose_schema() {
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
}

check_k8s_schema() {
    local version=$1
    "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$OUT"/k8s/*.yaml ||
        return 1
    log "$(find "$OUT/k8s" -name '*.yaml' | wc -l) files valid against Kubernetes $version (strict)"
}

check_promtool_rules() {
    "$PROMTOOL_DIR/promtool" check rules deploy/prometheus/alerts.yml || return 1
    (cd deploy/prometheus && "$PROMTOOL_DIR/promtool" test rules alerts.test.yml) || return 1
}

check_promtool_config() {
    "$PROMTOOL_DIR/promtool" check config deploy/prometheus/prometheus.yml
}

check_grafana() {
    "$VENV/bin/python" deploy/tools/check_observability.py "$OUT/dashboard-queries.yml" || return 1
    "$PROMTOOL_DIR/promtool" check rules "$OUT/dashboard-queries.yml" || return 1
}

check_pins_install() {
    # The API image's pinned dependencies and the project wheel, installed the way the
    # Dockerfile does it, into a fresh Python 3.12 virtual environment.
    local py venv="$ROOT/build/deploy-pins-venv" wheels="$OUT/wheels"
    if ! py=$(find_python312); then
        log "no Python 3.12 interpreter here: cannot install the cp312 pins (pins-closure still ran)"
        return 1
    fi
    rm -rf "$venv" "$wheels"
    "$py" -m venv "$venv" || return 1
    "$venv/bin/pip" install --quiet --no-compile --only-binary=:all: --no-deps \
        -r deploy/requirements/api-cpu.txt ||
        return 1
    "$venv/bin/pip" install --quiet --only-binary=:all: -r deploy/requirements/build.txt || return 1
    "$venv/bin/pip" wheel --quiet --no-build-isolation --no-deps --wheel-dir "$wheels" . || return 1
    "$venv/bin/pip" install --quiet --no-deps "$wheels"/*.whl || return 1
    "$venv/bin/pip" uninstall --quiet --yes setuptools || return 1
    "$venv/bin/pip" check || return 1
    (cd "$OUT" && "$venv/bin/python" - <<'EOF'
import importlib.util
import sys

assert importlib.util.find_spec("torch") is None, "torch must not be installed in the API image"
import service  # noqa: E402,F401
import service.app  # noqa: E402,F401
import spectra  # noqa: E402,F401

assert "torch" not in sys.modules
print(f"api-cpu.txt + the project wheel: service and spectra import on Python "
      f"{sys.version.split()[0]}, without torch")
EOF
    ) || return 1
    log "installed into ${venv#"$ROOT"/}: $("$venv/bin/pip" list --format=freeze | wc -l) distributions"
}

main() {
    log "deploy validation (static: no Docker engine or Kubernetes cluster is used)"
    setup_venv
    setup_promtool
    rm -rf "$OUT"
    mkdir -p "$OUT/k8s"
    local tools="$ROOT/deploy/tools"

    run_check hadolint "$VENV/bin/hadolint" Dockerfile
    run_check shellcheck "$VENV/bin/shellcheck" deploy/validate.sh deploy/docker/entrypoint.sh
    run_check images "$VENV/bin/python" "$tools/check_images.py"
    run_check yamllint check_yaml
    run_check compose-schema check_compose_schema
    run_check compose "$VENV/bin/python" "$tools/check_compose.py"
    run_check k8s-render "$VENV/bin/python" "$tools/check_k8s.py" render "$OUT/k8s"
    run_check k8s-schema-1.30 check_k8s_schema 1.30.0
    run_check k8s-schema-1.37 check_k8s_schema 1.37.0
    run_check k8s-policy "$VENV/bin/python" "$tools/check_k8s.py" policy "$OUT/k8s"
    run_check promtool-rules check_promtool_rules
    run_check promtool-config check_promtool_config
    run_check grafana check_grafana
    run_check pins-closure "$VENV/bin/python" "$tools/pins.py" check
    run_check pins-install check_pins_install

    log "deploy validation took $(($(date +%s) - started))s; not exercised here: building or running"
    log "the images, docker compose up, applying to a cluster (see docs/deploy.md)"
    if [ "$failed" -gt 0 ]; then
        log "failed: ${failed_names[*]}"
    fi
    log "deploy-validate: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

main "$@"
