#!/usr/bin/env bash
# Installs the Debian packages behind the package's system-library targets.
# Safe to re-run: apt is only touched when something is missing.
set -euo pipefail

# redis-server: the peer the YCSB study measures eekv against (and the Redis binding's tests).
packages=(pkg-config libnuma-dev libibverbs-dev libssl-dev liblmdb-dev redis-server)
# openssl: the command-line tool a security test drives (`openssl s_client` without a certificate).
packages+=(openssl)
# What the Swift toolchain in /opt/swift needs to compile and link on Debian 12 (swift.org's list:
# the linker, the C and C++ runtime headers, and the libraries Foundation and the REPL load).
packages+=(binutils gcc git libc6-dev libgcc-12-dev libstdc++-12-dev libcurl4 libxml2 libedit2 libsqlite3-0
    libncurses6 libpython3.11 zlib1g-dev uuid-dev tzdata)
# Intel's multi-buffer crypto library is x86-only.
if [[ "$(dpkg --print-architecture)" == amd64 ]]; then
    packages+=(libipsec-mb-dev)
fi

missing=()
for pkg in "${packages[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} > 0)); then
    sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null; then
            sudo=(sudo)
        else
            echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    # A freshly booted machine's daily apt jobs may hold dpkg's lock for a while: install waits for it.
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y \
        --no-install-recommends "${missing[@]}"
    # The package starts a system-wide Redis on port 6379; the study and the tests start their
    # own on ports they pick, so the one just installed is stopped and left disabled.
    if [[ " ${missing[*]} " == *" redis-server "* ]]; then
        "${sudo[@]}" systemctl disable --now redis-server >/dev/null 2>&1 ||
            "${sudo[@]}" service redis-server stop >/dev/null 2>&1 || true
    fi
fi

if ! command -v swift >/dev/null && [[ ! -x /opt/swift/usr/bin/swift ]]; then
    echo "install-deps: swift not found on PATH or at /opt/swift/usr/bin; install a Swift 6 toolchain first" >&2
    exit 1
fi

if ((${#missing[@]} > 0)); then
    echo "install-deps: installed ${missing[*]}"
else
    echo "install-deps: all ${#packages[@]} packages already installed, nothing to do"
fi
