# cmake -DIN=scripts.lua -DOUT=scripts_lua.h -P embed_lua.cmake
# Every "--@ NAME" section of IN becomes `#define VX_LUA_NAME "..."` in OUT (the text before
# the first section, a comment, becomes VX_LUA_PREAMBLE, unused). Only cmake itself is needed.
file(READ "${IN}" S)
string(REPLACE "\\" "\\\\" S "${S}")
string(REPLACE "\"" "\\\"" S "${S}")
string(REGEX REPLACE "--@ ([A-Z_]+)\n" "@@VXLUA \\1@@" S "${S}")
string(REPLACE "\n" "\\n\" \\\n  \"" S "${S}")
string(REGEX REPLACE "@@VXLUA ([A-Z_]+)@@" "\"\n#define VX_LUA_\\1 \\\\\n  \"" S "${S}")
file(WRITE "${OUT}.tmp" "/* Generated from scripts.lua by embed_lua.cmake: do not edit. */\n#define VX_LUA_PREAMBLE \"${S}\"\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
