/* The options table: defaults, the one text parser every front end uses, the checks of
 * vx_new, and messages that name the option that failed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "vxevents.h"

static void table_rows_are_complete_and_names_unique(void **state) {
  (void)state;
  size_t n = 0;
  const vx_option_info *t = vx_option_table(&n);
  assert_true(n >= 20);
  for (size_t i = 0; i < n; i++) {
    assert_non_null(t[i].name);
    assert_non_null(t[i].flag);
    assert_non_null(t[i].env);
    assert_non_null(t[i].help);
    assert_true(t[i].min <= t[i].max);
    assert_true(t[i].offset < sizeof(vx_options));
    assert_int_equal(strncmp(t[i].env, "VX_", 3), 0);
    for (size_t j = 0; j < i; j++) {
      assert_string_not_equal(t[i].flag, t[j].flag);
      assert_string_not_equal(t[i].name, t[j].name);
      if (t[i].node && t[j].node)
        assert_string_not_equal(t[i].node, t[j].node);
      if (t[i].python && t[j].python)
        assert_string_not_equal(t[i].python, t[j].python);
    }
  }
}

static void init_gives_the_documented_defaults_which_pass_the_check(void **state) {
  (void)state;
  vx_options o;
  vx_options_init(&o);
  assert_string_equal(o.path, "/ws");
  assert_int_equal(o.ping_interval_ms, 30000);
  assert_int_equal(o.max_payload, 1024 * 1024);
  assert_int_equal(o.max_send_queue, 1024 * 1024);
  assert_int_equal(o.max_connections, 100000);
  assert_int_equal(o.max_channels_per_conn, 100);
  assert_int_equal(o.client_events_per_sec, 10);
  assert_int_equal(o.max_member_size, 2048);
  assert_int_equal(o.max_presence_members, 10000);
  assert_int_equal(o.heartbeat_interval_ms, 15000);
  assert_int_equal(o.retry_interval_ms, 3000);
  assert_int_equal(o.permessage_deflate, 1);
  assert_int_equal(o.history_size, 100);
  assert_int_equal(o.redis_backlog_max, 16 * 1024 * 1024);
  assert_int_equal(o.log_level, VX_LOG_WARN);
  assert_null(o.api_key);
  assert_null(o.auth_secret);
  assert_null(o.sse_path);
  assert_null(o.redis_url);
  assert_null(o.authorize);
  char err[256] = "";
  assert_int_equal(vx_options_check(&o, err, sizeof err), 0);
}

static void set_accepts_every_name_of_an_option(void **state) {
  (void)state;
  vx_options o;
  vx_options_init(&o);
  char err[256];
  assert_int_equal(vx_options_set(&o, "max_payload", "4096", err, sizeof err), 0);
  assert_int_equal(o.max_payload, 4096);
  assert_int_equal(vx_options_set(&o, "max-payload", "5000", err, sizeof err), 0);
  assert_int_equal(o.max_payload, 5000);
  assert_int_equal(vx_options_set(&o, "maxPayloadSize", "6000", err, sizeof err), 0);
  assert_int_equal(o.max_payload, 6000);
  assert_int_equal(vx_options_set(&o, "ping_interval", "0", err, sizeof err), 0);
  assert_int_equal(o.ping_interval_ms, 0);
  assert_int_equal(vx_options_set(&o, "compression", "off", err, sizeof err), 0);
  assert_int_equal(o.permessage_deflate, 0);
  assert_int_equal(vx_options_set(&o, "compression", "true", err, sizeof err), 0);
  assert_int_equal(o.permessage_deflate, 1);
  assert_int_equal(vx_options_set(&o, "log-level", "DEBUG", err, sizeof err), 0);
  assert_int_equal(o.log_level, VX_LOG_DEBUG);
  assert_int_equal(vx_options_set(&o, "sse-path", "/events", err, sizeof err), 0);
  assert_string_equal(o.sse_path, "/events");
  assert_int_equal(vx_options_set(&o, "redis", "redis://127.0.0.1:6379/2", err, sizeof err), 0);
  assert_string_equal(o.redis_url, "redis://127.0.0.1:6379/2");
  /* Empty restores the default. */
  assert_int_equal(vx_options_set(&o, "redis", "", err, sizeof err), 0);
  assert_null(o.redis_url);
  assert_int_equal(vx_options_set(&o, "path", "", err, sizeof err), 0);
  assert_string_equal(o.path, "/ws");
  assert_int_equal(vx_options_check(&o, err, sizeof err), 0);
}

static void bad_values_are_refused_with_the_option_named(void **state) {
  (void)state;
  vx_options o;
  vx_options_init(&o);
  char err[256];
  struct {
    const char *name, *value, *says;
    int code;
  } bad[] = {
      {"max-payload", "63", "max-payload must be 64 to", VX_EINVAL},
      {"max-payload", "12abc", "max-payload must be a whole number", VX_EINVAL},
      {"max-payload", "-1", "max-payload must be a whole number", VX_EINVAL},
      {"max-payload", "99999999999999999999999", "max-payload must be a whole number", VX_EINVAL},
      {"max-connections", "0", "max-connections must be 1 to", VX_EINVAL},
      {"maxSendQueue", "100", "maxSendQueue must be 1024 to", VX_EINVAL},
      {"compression", "2", "compression must be 1 (on) or 0 (off)", VX_EINVAL},
      {"log_level", "loud", "log_level must be error, warn, info or debug", VX_EINVAL},
      {"path", "ws", "path must start with '/'", VX_EINVAL},
      {"path", "/a?b", "path must start with '/'", VX_EINVAL},
      {"authSecret", "too-short", "authSecret must be at least 32 characters (got 9)", VX_ESECRET},
      {"redis", "http://host", "redis must look like redis://", VX_EINVAL},
      {"redis_prefix", "0123456789012345678901234567890123456789012345678901234567890",
       "redis_prefix must be 1 to 60 characters", VX_EINVAL},
      {"no-such-option", "1", "unknown option 'no-such-option'", VX_EINVAL},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = 0;
    vx_options before = o;
    int r = vx_options_set(&o, bad[i].name, bad[i].value, err, sizeof err);
    if (r != bad[i].code || !strstr(err, bad[i].says))
      fail_msg("%s=%s: got %d '%s', want %d '%s'", bad[i].name, bad[i].value, r, err, bad[i].code,
               bad[i].says);
    o = before; /* a refused string stays set; the caller gives up on these options */
  }
}

static void vx_new_refuses_what_the_check_refuses(void **state) {
  (void)state;
  vx_options o;
  vx_options_init(&o);
  char err[256] = "";
  o.max_send_queue = 10;
  assert_int_equal(vx_options_check(&o, err, sizeof err), VX_EINVAL);
  assert_non_null(strstr(err, "max_send_queue"));
  vx_events *ev = NULL;
  assert_int_equal(vx_new(&ev, &o), VX_EINVAL);
  assert_null(ev);
  vx_options_init(&o);
  o.sse_path = "/ws";
  assert_int_equal(vx_options_check(&o, err, sizeof err), VX_EINVAL);
  assert_non_null(strstr(err, "sse_path must differ from path"));
  assert_int_equal(vx_new(&ev, &o), VX_EINVAL);
  vx_options_init(&o);
  o.auth_secret = "short";
  assert_int_equal(vx_new(&ev, &o), VX_ESECRET);
  o.auth_secret = "0123456789abcdef0123456789abcdef";
  o.path = NULL;
  assert_int_equal(vx_options_check(&o, err, sizeof err), VX_EINVAL);
  assert_non_null(strstr(err, "path is required"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(table_rows_are_complete_and_names_unique),
      cmocka_unit_test(init_gives_the_documented_defaults_which_pass_the_check),
      cmocka_unit_test(set_accepts_every_name_of_an_option),
      cmocka_unit_test(bad_values_are_refused_with_the_option_named),
      cmocka_unit_test(vx_new_refuses_what_the_check_refuses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
