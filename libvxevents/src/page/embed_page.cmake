# cmake -DIN=landing.html -DOUT=landing_html.h -DNAME=VX_LANDING_HTML -P embed_page.cmake
# The whole of IN becomes `#define NAME "..."` in OUT, one C string line per line of IN, as
# redis/embed_lua.cmake does for the Lua scripts. Only cmake itself is needed.
file(READ "${IN}" S)
string(REPLACE "\\" "\\\\" S "${S}")
string(REPLACE "\"" "\\\"" S "${S}")
string(REPLACE "?" "\\?" S "${S}") # no trigraphs
string(REPLACE "\n" "\\n\" \\\n  \"" S "${S}")
file(WRITE "${OUT}.tmp" "/* Generated from ${NAME_SOURCE} by embed_page.cmake: do not edit. */\n#define ${NAME} \\\n  \"${S}\"\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
