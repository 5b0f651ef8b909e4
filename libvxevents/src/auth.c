/* Channel authorization tokens: auth = socketId ":" hex(HMAC-SHA256(secret,
 * socketId ":" channel [":" channel_data])). Signing is synchronous and thread-safe (the
 * secret never changes after vx_new); verification runs on the loop thread on every
 * private/presence subscribe and compares in constant time. */
#include "vx_int.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

/* Socket ids in tokens and request bodies: our own are 32 hex digits; accept what a host
 * might reasonably use too, never ':' (the token separator) or anything needing escapes. */
bool vx__socket_id_valid(const char *id, size_t n) {
  if (n == 0 || n > 64)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
          c == '-' || c == '_'))
      return false;
  }
  return true;
}

/* Writes the token (NUL-terminated) into out; returns its length or a VX_E code. */
int vx__auth_token(const char *secret, size_t slen, const char *socket_id, size_t idlen,
                   const char *channel, size_t clen, const char *cdata, size_t cdlen, char *out,
                   size_t out_len) {
  static const char hex[] = "0123456789abcdef";
  if (!vx__socket_id_valid(socket_id, idlen) || !vx__channel_valid(channel, clen))
    return VX_EINVAL;
  if (out_len < idlen + 1 + 64 + 1)
    return VX_EINVAL;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  /* The signed message is small (id, channel and a bounded member), so it is assembled in
   * one buffer for the one-shot HMAC; on the stack unless channel_data is large. */
  size_t mlen = idlen + 1 + clen + (cdata ? 1 + cdlen : 0);
  char stackbuf[512];
  char *msg = mlen <= sizeof stackbuf ? stackbuf : malloc(mlen);
  if (!msg)
    return VX_ENOMEM;
  memcpy(msg, socket_id, idlen);
  msg[idlen] = ':';
  memcpy(msg + idlen + 1, channel, clen);
  if (cdata) {
    msg[idlen + 1 + clen] = ':';
    memcpy(msg + idlen + 2 + clen, cdata, cdlen);
  }
  unsigned char *r =
      HMAC(EVP_sha256(), secret, (int)slen, (const unsigned char *)msg, mlen, md, &mdlen);
  if (msg != stackbuf)
    free(msg);
  if (!r || mdlen != 32)
    return VX_EIO;
  memcpy(out, socket_id, idlen);
  out[idlen] = ':';
  for (unsigned i = 0; i < 32; i++) {
    out[idlen + 1 + 2 * i] = hex[md[i] >> 4];
    out[idlen + 2 + 2 * i] = hex[md[i] & 15];
  }
  out[idlen + 65] = '\0';
  return (int)(idlen + 65);
}

bool vx__auth_verify(vx_events *ev, const char *socket_id, const char *channel, size_t clen,
                     const char *cdata, size_t cdlen, const char *auth, size_t alen) {
  char want[VX_SOCKET_ID_LEN + 66];
  if (!ev->auth_secret)
    return false;
  int n = vx__auth_token(ev->auth_secret, ev->auth_secret_len, socket_id, strlen(socket_id),
                         channel, clen, cdata, cdlen, want, sizeof want);
  if (n < 0 || (size_t)n != alen)
    return false;
  /* Only the length (fixed for our own ids) can leak; the bytes compare in constant time. */
  return CRYPTO_memcmp(want, auth, alen) == 0;
}

int vx_sign(vx_events *ev, const char *socket_id, const char *channel, const char *channel_data,
            char *out, size_t out_len) {
  if (!ev || !socket_id || !channel || !out)
    return VX_EINVAL;
  if (!ev->auth_secret)
    return VX_ESECRET;
  return vx__auth_token(ev->auth_secret, ev->auth_secret_len, socket_id, strlen(socket_id), channel,
                        strlen(channel), channel_data, channel_data ? strlen(channel_data) : 0, out,
                        out_len);
}
