#!/bin/bash
# packaging/debian: `dpkg-buildpackage -us -uc -b` in a copy of the source tree (debian/ copied
# from packaging/debian), then `dpkg-deb -c`/`-I` checks of the .deb's contents. Bounded: the
# build gets BUILD_TIMEOUT seconds (default 900; it compiles the whole project). With DEB_OUT=DIR
# the checked .deb is kept there (the container image test builds its image from it).
set -euo pipefail
: "${SOURCE_ROOT:?}"
for tool in dpkg-buildpackage dpkg-deb dh; do
  command -v $tool >/dev/null || { echo "SKIP: no $tool (apt-get install dpkg-dev debhelper)"; exit 77; }
done
work=$(mktemp -d /tmp/lazystore-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/lazystore-0.1.0
mkdir "$src"
# The tracked sources, without build directories or other engineers' scratch.
tar -C "$SOURCE_ROOT" --exclude='./build*' --exclude=./.git --exclude=__pycache__ \
  --exclude=./debian -cf - . | tar -C "$src" -xf -
cp -r "$src/packaging/debian" "$src/debian"
started=$SECONDS
( cd "$src" && timeout "${BUILD_TIMEOUT:-900}" dpkg-buildpackage -us -uc -b -j2 ) >"$work/build.log" 2>&1 || {
  tail -60 "$work/build.log"; echo "FAIL: dpkg-buildpackage"; exit 1; }
echo "dpkg-buildpackage took $((SECONDS - started)) s"
deb=$(ls "$work"/lazystore_0.1.0_*.deb)
contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's#^\./#/#')
missing=0
for f in /usr/sbin/lazystore /usr/sbin/lazystore-ctl /usr/bin/lazystore-push /usr/bin/lazystore-publish \
         /lib/systemd/system/nix-store.mount /usr/lib/tmpfiles.d/lazystore.conf \
         /usr/lib/lazystore/lazystore-serve /usr/share/lazystore/entrypoint.sh \
         /lib/systemd/system/lazystore-roots-expire.service /lib/systemd/system/lazystore-roots-expire.timer \
         /etc/default/lazystore-roots-expire \
         /usr/share/man/man8/lazystore.8.gz /usr/share/man/man8/lazystore-ctl.8.gz \
         /usr/share/man/man1/lazystore-push.1.gz /usr/share/man/man1/lazystore-publish.1.gz \
         /usr/share/doc/lazystore/copyright; do
  grep -qx "$f" <<<"$contents" || { echo "missing in the .deb: $f"; missing=1; }
done
((missing == 0)) || { echo "$contents"; exit 1; }
info=$(dpkg-deb -I "$deb")
grep -q '^ Depends:.*fuse3' <<<"$info" || { echo "FAIL: Depends lacks fuse3"; echo "$info"; exit 1; }
grep -q '^ Depends:.*libnfs' <<<"$info" || { echo "FAIL: shlibs Depends lacks libnfs"; echo "$info"; exit 1; }
# The binaries in the package run.
dpkg-deb -x "$deb" "$work/root"
"$work/root/usr/sbin/lazystore" --version | grep -q '^lazystore 0.1.0'
"$work/root/usr/sbin/lazystore-ctl" --help | grep -q prefetch
echo "ok: $(basename "$deb"): $(wc -l <<<"$contents") entries, binaries, units, man pages"
if [[ -n ${DEB_OUT:-} ]]; then cp "$deb" "$DEB_OUT/"; fi
