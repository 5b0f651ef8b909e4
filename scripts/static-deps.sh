#!/usr/bin/env bash
# Position-independent static builds of the C dependencies that Debian 12 does not ship as
# PIC archives, for the prebuilt Node addon and the Python wheel:
#
#   libuv   libuv_a.a exists but is not PIC          -> built from the libuv1 source package
#   zlib    libz.a exists but is not PIC             -> built from the zlib source package
#   cJSON   no static library at all                 -> built from the cjson source package
#   wslay   no static library, and the wslay source  -> built from the copy of wslay 1.1.1 (the
#           package is not served here                  same upstream release as libwslay-dev)
#                                                       inside the aria2 source package
#
# hiredis, http-parser and OpenSSL's libcrypto.a from the -dev packages are already PIC and are
# used as they are. Sources come from Debian's own archive through apt-get source, with a
# private list directory under build/deps so the machine's apt configuration is not changed.
#
# Usage: scripts/static-deps.sh [OUT]   (default build/deps). Prints the install prefix
# (OUT/prefix: include/ and lib/*.a) on its last line. A second run with the same versions
# does nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/build/deps}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PREFIX=$OUT/prefix
JOBS=${JOBS:-$(nproc)}

log() { echo "static-deps: $*" >&2; }
die() { echo "static-deps: error: $*" >&2; exit 1; }

# --- a private apt configuration whose sources are the machine's Debian ones, as deb-src ----
. /etc/os-release
CODENAME=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
APT_DIR=$OUT/apt
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/sources"
SRC_FILE=$APT_DIR/sources/debian-src.sources
{
  # deb822 files: every stanza of type deb whose suites are this release's.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk -v c="$CODENAME" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && uris != "" && suites != "") {
          n = split(suites, s, " "); keep = ""
          for (i = 1; i <= n; i++)
            if (s[i] == c || s[i] == c "-updates" || s[i] == c "-security") keep = keep " " s[i]
          if (keep != "") {
            print "Types: deb-src"; print "URIs: " uris; print "Suites:" keep
            print "Components: " comps
            if (signed != "") print "Signed-By: " signed
            print ""
          }
        }
        types = uris = suites = comps = signed = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { key = $1; sub(/:$/, "", key); $1 = ""; sub(/^ /, "")
        if (key == "Types") types = $0; else if (key == "URIs") uris = $0
        else if (key == "Suites") suites = $0; else if (key == "Components") comps = $0
        else if (key == "Signed-By") signed = $0 }
      END { flush() }' "$f"
  done
  # One-line format.
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] || continue
    awk -v c="$CODENAME" '$1 == "deb" {
        i = 2; opts = ""; if ($2 ~ /^\[/) { while ($i !~ /\]$/) { opts = opts $i " "; i++ } opts = opts $i " "; i++ }
        suite = $(i + 1)
        if (suite == c || suite == c "-updates" || suite == c "-security") {
          line = "deb-src " opts; for (j = i; j <= NF; j++) line = line $j " "; print line
        }
      }' "$f" > "$APT_DIR/sources/oneline.tmp"
    if [ -s "$APT_DIR/sources/oneline.tmp" ]; then
      mv "$APT_DIR/sources/oneline.tmp" "$APT_DIR/sources/$(basename "$f" .list).list"
    fi
  done
} > "$SRC_FILE"
rm -f "$APT_DIR/sources/oneline.tmp"
[ -s "$SRC_FILE" ] || ls "$APT_DIR"/sources/*.list >/dev/null 2>&1 ||
  die "found no Debian ($CODENAME) entry in /etc/apt/sources.list* to derive deb-src from"

APT=(apt-get -q -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$APT_DIR/sources"
     -o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache"
     -o APT::Sandbox::User=root)
APT_CACHE=(apt-cache -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$APT_DIR/sources"
           -o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache")

# The versions wanted: the source versions of the installed -dev packages (their headers are
# what the rest of the build sees).
srcver() { dpkg-query -W -f='${source:Version}' "$1" 2>/dev/null || true; }
WANT="libuv1=$(srcver libuv1-dev) cjson=$(srcver libcjson-dev) zlib=$(srcver zlib1g-dev) wslay-from-aria2 v2"
if [ -f "$PREFIX/.stamp" ] && [ "$(cat "$PREFIX/.stamp")" = "$WANT" ]; then
  log "up to date ($PREFIX)"
  echo "$PREFIX"
  exit 0
fi

if [ ! -f "$APT_DIR/.updated" ] || [ -n "$(find "$APT_DIR/.updated" -mmin +1440 2>/dev/null)" ]; then
  log "apt-get update (deb-src lists in $APT_DIR)"
  "${APT[@]}" update >&2 || die "apt-get update of the deb-src lists failed"
  touch "$APT_DIR/.updated"
fi

# fetch PKG PREFERRED_VERSION DIR: download and unpack (Debian patches applied) the source
# package at the preferred version, or else at the newest version the archive serves.
fetch() {
  local pkg=$1 pref=$2 dir=$3 v
  local versions
  versions=$("${APT_CACHE[@]}" showsrc "$pkg" 2>/dev/null | awk '/^Version:/ { print $2 }' | sort -u -r -V)
  [ -n "$versions" ] || die "the deb-src lists know no source package '$pkg'"
  local tried=" "
  for v in $pref $versions; do
    [ -n "$v" ] || continue
    case "$tried" in *" $v "*) continue ;; esac
    tried="$tried$v "
    rm -rf "$OUT/dl/$pkg" && mkdir -p "$OUT/dl/$pkg"
    if (cd "$OUT/dl/$pkg" && "${APT[@]}" source --download-only "$pkg=$v" >/dev/null 2>&1); then
      log "$pkg $v"
      rm -rf "$dir"
      if [ "$pkg" = aria2 ]; then
        mkdir -p "$dir" && tar -xzf "$OUT"/dl/aria2/aria2_*.orig.tar.gz -C "$dir" --strip-components=1
      else
        dpkg-source -x "$OUT"/dl/"$pkg"/*.dsc "$dir" >/dev/null 2>&1 ||
          die "dpkg-source could not unpack $pkg $v"
      fi
      return 0
    fi
    log "$pkg $v is not served, trying another version"
  done
  die "no version of the source package '$pkg' could be downloaded"
}

SRC=$OUT/src
BLD=$OUT/build
rm -rf "$PREFIX" "$BLD"
mkdir -p "$SRC" "$BLD" "$PREFIX/include" "$PREFIX/lib"
CFLAGS_PIC="-O2 -fPIC -fvisibility=hidden -ffunction-sections -fdata-sections"

# libuv: its own CMake build, only the static target.
fetch libuv1 "$(srcver libuv1-dev)" "$SRC/libuv"
cmake -S "$SRC/libuv" -B "$BLD/libuv" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_C_FLAGS="$CFLAGS_PIC" \
  -DLIBUV_BUILD_TESTS=OFF -DLIBUV_BUILD_BENCH=OFF >/dev/null
ninja -C "$BLD/libuv" -j "$JOBS" uv_a >/dev/null
cp "$BLD/libuv/libuv_a.a" "$PREFIX/lib/libuv_a.a"
cp -r "$SRC/libuv/include/." "$PREFIX/include/"

# zlib: the library sources only (no minizip, no examples).
fetch zlib "$(srcver zlib1g-dev)" "$SRC/zlib"
mkdir -p "$BLD/zlib"
for c in adler32 compress crc32 deflate gzclose gzlib gzread gzwrite infback inffast inflate \
         inftrees trees uncompr zutil; do
  cc $CFLAGS_PIC -D_LARGEFILE64_SOURCE=1 -DHAVE_HIDDEN -I"$SRC/zlib" -c "$SRC/zlib/$c.c" \
     -o "$BLD/zlib/$c.o" &
  [ "$(jobs -r | wc -l)" -lt "$JOBS" ] || wait -n
done
wait
ar rcs "$PREFIX/lib/libz.a" "$BLD"/zlib/*.o
cp "$SRC/zlib/zlib.h" "$SRC/zlib/zconf.h" "$PREFIX/include/"

# cJSON: one file.
fetch cjson "$(srcver libcjson-dev)" "$SRC/cjson"
mkdir -p "$BLD/cjson" "$PREFIX/include/cjson"
cc $CFLAGS_PIC -std=c89 -c "$SRC/cjson/cJSON.c" -o "$BLD/cjson/cJSON.o"
ar rcs "$PREFIX/lib/libcjson.a" "$BLD/cjson/cJSON.o"
cp "$SRC/cjson/cJSON.h" "$PREFIX/include/cjson/"

# wslay 1.1.1 from the aria2 source package (deps/wslay).
fetch aria2 "" "$SRC/aria2"
W=$SRC/aria2/deps/wslay
grep -q 'WSLAY_VERSION "1.1.1"' "$W/lib/includes/wslay/wslayver.h" ||
  die "the wslay inside aria2 is not 1.1.1 (libwslay-dev's release); check $W"
mkdir -p "$BLD/wslay" "$PREFIX/include/wslay"
for c in wslay_event wslay_frame wslay_net wslay_queue; do
  cc $CFLAGS_PIC -DHAVE_ARPA_INET_H=1 -DHAVE_NETINET_IN_H=1 -I"$W/lib/includes" -I"$W/lib" \
     -c "$W/lib/$c.c" -o "$BLD/wslay/$c.o"
done
ar rcs "$PREFIX/lib/libwslay.a" "$BLD"/wslay/*.o
cp "$W/lib/includes/wslay/wslay.h" "$W/lib/includes/wslay/wslayver.h" "$PREFIX/include/wslay/"

echo "$WANT" > "$PREFIX/.stamp"
log "built $(cd "$PREFIX/lib" && echo *.a) in $PREFIX"
echo "$PREFIX"
