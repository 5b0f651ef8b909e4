#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan + UBSan) into fuzz/build/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/build
SRC=$(ls libvxevents/src/*.c libvxevents/src/redis/*.c)
mkdir -p fuzz/build/generated
cmake -DIN=libvxevents/src/redis/scripts.lua -DOUT=fuzz/build/generated/scripts_lua.h \
  -P libvxevents/src/redis/embed_lua.cmake
cmake -DIN=libvxevents/src/page/landing.html -DOUT=fuzz/build/generated/landing_html.h \
  -DNAME=VX_LANDING_HTML -DNAME_SOURCE=page/landing.html -P libvxevents/src/page/embed_page.cmake
FLAGS="-g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
  -Ilibvxevents/include -Ilibvxevents/src -Ifuzz/build/generated -I/usr/include/cjson -I/usr/include/hiredis"
LIBS="-luv -lwslay -lhttp_parser -lcjson -lssl -lcrypto -lhiredis -lz -lpthread"
for t in json conn; do
  clang $FLAGS fuzz/fuzz_$t.c $SRC $LIBS -o fuzz/build/fuzz_$t
done
echo "built: fuzz/build/fuzz_json fuzz/build/fuzz_conn"
