#!/usr/bin/env bash
# Installs everything sts-agent and its test suite need on a Debian host:
# system packages through apt-get (when root, or through sudo) and Python
# packages into ./.venv pinned by constraints.txt.  Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

want_apt="${1:-test}"   # "demo" needs no system packages; "test" needs the real servers
apt_pkgs=(dnsmasq-base prometheus iproute2 chromium ca-certificates systemd)
py_extra="[test]"
if [ "$want_apt" = "demo" ]; then apt_pkgs=(); py_extra=""; fi

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then missing+=(python3-venv); fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo_cmd=(); elif command -v sudo >/dev/null; then sudo_cmd=(sudo); else
    echo "bootstrap: need root or sudo to install: ${missing[*]}" >&2; exit 1; fi
  echo "bootstrap: apt-get install ${missing[*]}" >&2
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
stamp=".venv/.installed${py_extra}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".${py_extra}"
  touch "$stamp"
fi
