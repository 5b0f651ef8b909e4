/* A string-keyed hash map with linear probing and backward-shift deletion (no
 * tombstones, so lookups stay short after churn). Load factor is kept under 3/4. */
#include "vx_int.h"

#include <stdlib.h>
#include <string.h>

/* FNV-1a: short keys (socket ids, channel names), no adversarial-collision concern
 * worth a keyed hash yet since ids are random and channel counts are bounded per peer. */
uint32_t vx__hash(const char *s, size_t len) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) {
    h ^= (uint8_t)s[i];
    h *= 16777619u;
  }
  return h;
}

static vx_map_entry *find(const vx_map *m, const char *key, size_t klen, uint32_t h) {
  if (!m->cap)
    return NULL;
  uint32_t mask = m->cap - 1;
  for (uint32_t i = h & mask;; i = (i + 1) & mask) {
    vx_map_entry *e = &m->slots[i];
    if (!e->key)
      return NULL;
    if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
      return e;
  }
}

void *vx__map_get(const vx_map *m, const char *key, size_t klen) {
  vx_map_entry *e = find(m, key, klen, vx__hash(key, klen));
  return e ? e->val : NULL;
}

static void insert_slot(vx_map_entry *slots, uint32_t cap, vx_map_entry ent) {
  uint32_t mask = cap - 1;
  uint32_t i = ent.hash & mask;
  while (slots[i].key)
    i = (i + 1) & mask;
  slots[i] = ent;
}

static int grow(vx_map *m) {
  uint32_t ncap = m->cap ? m->cap * 2 : 16;
  vx_map_entry *ns = calloc(ncap, sizeof *ns);
  if (!ns)
    return VX_ENOMEM;
  for (uint32_t i = 0; i < m->cap; i++)
    if (m->slots[i].key)
      insert_slot(ns, ncap, m->slots[i]);
  free(m->slots);
  m->slots = ns;
  m->cap = ncap;
  return 0;
}

int vx__map_put(vx_map *m, const char *key, size_t klen, void *val) {
  uint32_t h = vx__hash(key, klen);
  vx_map_entry *e = find(m, key, klen, h);
  if (e) {
    e->key = key;
    e->val = val;
    return 0;
  }
  if ((m->len + 1) * 4 > m->cap * 3 && grow(m) != 0)
    return VX_ENOMEM;
  insert_slot(m->slots, m->cap, (vx_map_entry){key, h, (uint32_t)klen, val});
  m->len++;
  return 0;
}

void *vx__map_del(vx_map *m, const char *key, size_t klen) {
  vx_map_entry *e = find(m, key, klen, vx__hash(key, klen));
  if (!e)
    return NULL;
  void *val = e->val;
  uint32_t mask = m->cap - 1;
  uint32_t i = (uint32_t)(e - m->slots);
  /* Shift following entries back while they sit after their home slot. */
  for (uint32_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
    uint32_t home = m->slots[j].hash & mask;
    bool movable = (i <= j) ? (home <= i || home > j) : (home <= i && home > j);
    if (movable) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  m->slots[i].key = NULL;
  m->len--;
  return val;
}

void vx__map_free(vx_map *m) {
  free(m->slots);
  m->slots = NULL;
  m->cap = m->len = 0;
}
