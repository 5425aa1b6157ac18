#!/bin/sh
# Install kuma-appliance from this unpacked tarball; needs no network. Safe to run again (to
# repair or to upgrade with a newer tarball): the binaries and units are replaced, your
# /etc/kuma/kuma-cp.conf.yaml and the data in /var/lib/kuma are kept.
#
#   sudo ./install.sh            # then: systemctl enable --now kuma-cp
#
# Installs: /opt/kuma/bin/{kuma-cp,kuma-dp,kumactl,envoy}, links in /usr/local/bin,
# /etc/kuma/kuma-cp.conf.yaml (only if absent), /etc/kuma/dataplanes/, the kuma system user,
# the work dir /var/lib/kuma, and the systemd units kuma-cp.service and kuma-dp@.service.
# DESTDIR=/some/dir installs under that folder instead, without creating the user or touching
# systemd or file owners (for packaging and tests).
set -eu

SRC=$(cd "$(dirname "$0")" && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=$DESTDIR/opt/kuma
ETC=$DESTDIR/etc/kuma
STATE=$DESTDIR/var/lib/kuma
UNITS=$DESTDIR/etc/systemd/system
LINKS=$DESTDIR/usr/local/bin

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo $0), or set DESTDIR to install into a folder"
fi
[ -x "$SRC/kuma-cp" ] || die "no kuma-cp next to install.sh: run it from the unpacked tarball"

# 1. The files are what was packed (a truncated copy fails here, before anything is replaced).
if command -v sha256sum >/dev/null 2>&1; then
    (cd "$SRC" && sha256sum --quiet -c SHA256SUMS) || die "checksums do not match SHA256SUMS: copy the tarball again"
else
    say "sha256sum not found: files not verified"
fi

# 2. The kuma system user and group.
if [ -z "$DESTDIR" ] && ! id kuma >/dev/null 2>&1; then
    if command -v useradd >/dev/null 2>&1; then
        if getent group kuma >/dev/null 2>&1; then group="-g kuma"; else group="--user-group"; fi
        # shellcheck disable=SC2086 # $group is two words or one on purpose
        useradd --system $group --home-dir /var/lib/kuma --no-create-home \
            --shell /usr/sbin/nologin --comment "Kuma control plane" kuma
    else
        adduser --system --group --home /var/lib/kuma --no-create-home --shell /usr/sbin/nologin kuma
    fi
    say "created the kuma system user"
fi

# own OWNER PATH...: chown unless installing into DESTDIR.
own() { owner=$1; shift; [ -n "$DESTDIR" ] || chown "$owner" "$@"; }

# put SOURCE TARGET MODE: replace TARGET atomically (a running kuma-cp keeps its old file).
put() {
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.new.$$"
    chmod "$3" "$2.new.$$"
    mv -f "$2.new.$$" "$2"
}

# 3. The programs: one executable, named three ways, and Envoy next to it.
put "$SRC/kuma-cp" "$PREFIX/bin/kuma-cp" 0755
ln -sfn kuma-cp "$PREFIX/bin/kuma-dp"
ln -sfn kuma-cp "$PREFIX/bin/kumactl"
if [ -f "$SRC/envoy" ]; then
    put "$SRC/envoy" "$PREFIX/bin/envoy" 0755
else
    say "this tarball has no Envoy: kuma-dp looks for one next to itself, then on PATH"
fi
put "$SRC/INSTALL.md" "$PREFIX/INSTALL.md" 0644
put "$SRC/config/kuma-cp.conf.yaml" "$PREFIX/config/kuma-cp.conf.yaml" 0644
if [ -d "$SRC/licenses" ]; then
    for f in "$SRC"/licenses/*; do put "$f" "$PREFIX/licenses/$(basename "$f")" 0644; done
fi
mkdir -p "$LINKS"
for name in kuma-cp kuma-dp kumactl; do
    ln -sfn "/opt/kuma/bin/$name" "$LINKS/$name"
done

# 4. Configuration: installed once, never overwritten (the shipped one stays in /opt/kuma/config).
mkdir -p "$ETC/dataplanes"
if [ ! -e "$ETC/kuma-cp.conf.yaml" ]; then
    put "$SRC/config/kuma-cp.conf.yaml" "$ETC/kuma-cp.conf.yaml" 0640
    own root:kuma "$ETC/kuma-cp.conf.yaml"
fi
chmod 0750 "$ETC/dataplanes"
own root:kuma "$ETC/dataplanes"

# 5. The work dir (SQLite store, certificates) and the unpack folder of the one-file executable.
mkdir -p "$STATE/tmp"
chmod 0750 "$STATE"
chmod 0700 "$STATE/tmp"
own kuma:kuma "$STATE" "$STATE/tmp"

# 6. systemd units.
put "$SRC/systemd/kuma-cp.service" "$UNITS/kuma-cp.service" 0644
put "$SRC/systemd/kuma-dp@.service" "$UNITS/kuma-dp@.service" 0644
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

version=$("$PREFIX/bin/kuma-cp" version 2>/dev/null || echo "kuma-cp: could not run it here")
say "installed $version"
if [ -z "$DESTDIR" ]; then
    say "next: systemctl enable --now kuma-cp && curl -s localhost:5680/ready"
fi
