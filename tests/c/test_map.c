/* The string-keyed hash map behind the socket and channel indexes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vx_int.h"

#define N 20000

static void map_survives_heavy_churn_without_losing_keys(void **st) {
  (void)st;
  static char keys[N][16];
  vx_map m = {0};
  for (int i = 0; i < N; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    assert_int_equal(vx__map_put(&m, keys[i], strlen(keys[i]), (void *)(intptr_t)(i + 1)), 0);
  }
  assert_int_equal(m.len, N);
  for (int i = 0; i < N; i += 2)
    assert_ptr_equal(vx__map_del(&m, keys[i], strlen(keys[i])), (void *)(intptr_t)(i + 1));
  assert_int_equal(m.len, N / 2);
  for (int i = 0; i < N; i++) {
    void *v = vx__map_get(&m, keys[i], strlen(keys[i]));
    if (i % 2)
      assert_ptr_equal(v, (void *)(intptr_t)(i + 1));
    else
      assert_null(v);
  }
  /* Re-insert and delete in another order: backward-shift deletion keeps chains intact. */
  for (int i = 0; i < N; i += 2)
    assert_int_equal(vx__map_put(&m, keys[i], strlen(keys[i]), (void *)(intptr_t)(i + 1)), 0);
  for (int i = N - 1; i >= 0; i -= 3)
    assert_non_null(vx__map_del(&m, keys[i], strlen(keys[i])));
  for (int i = 0; i < N; i++) {
    void *v = vx__map_get(&m, keys[i], strlen(keys[i]));
    if ((N - 1 - i) % 3 == 0)
      assert_null(v);
    else
      assert_ptr_equal(v, (void *)(intptr_t)(i + 1));
  }
  assert_null(vx__map_del(&m, "absent", 6));
  vx__map_free(&m);
  assert_int_equal(m.cap, 0);
}

static void map_keys_compare_by_length_and_bytes(void **st) {
  (void)st;
  vx_map m = {0};
  assert_null(vx__map_get(&m, "a", 1));
  vx__map_put(&m, "ab", 2, (void *)1);
  vx__map_put(&m, "abc", 3, (void *)2);
  assert_ptr_equal(vx__map_get(&m, "abc", 2), (void *)1);
  assert_ptr_equal(vx__map_get(&m, "abc", 3), (void *)2);
  vx__map_put(&m, "ab", 2, (void *)3);
  assert_int_equal(m.len, 2);
  assert_ptr_equal(vx__map_get(&m, "ab", 2), (void *)3);
  vx__map_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(map_survives_heavy_churn_without_losing_keys),
      cmocka_unit_test(map_keys_compare_by_length_and_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
